//! ringd's integration tests: one binary that starts the real `ringd` and talks to it over real
//! sockets, every case once per backend (`case::uring`, `case::epoll`, `case::tokio_uring`).
//!
//! A backend that cannot run on this machine prints `SKIP backend=X: reason` on stderr (never
//! a silent pass). `RINGD_TEST_BACKENDS=uring,epoll` limits the backends that run;
//! `RINGD_CORPUS_VERBOSE=1` prints every llhttp case with the statuses it got. Without the corpus
//! (a fresh clone) its replay prints `SKIP … llhttp corpus not found`; `RINGD_REQUIRE_CORPUS=1`
//! makes that a failure. The conformance cases (`conformance.rs`) always run.

mod abuse;
mod acme;
mod cache;
mod cgi;
mod conditional;
mod conformance;
mod corpus;
mod escapes;
mod faults;
mod harness;
mod http;
mod integrity;
mod ktls;
mod lifecycle;
mod limits;
mod proxy;
mod security;
mod sites;
mod splice;
mod static_files;
mod tls;
mod tunnel;
mod wsgi;
mod wsgi_stream;

/// For each `module::function` case, generate `function::{uring, epoll, tokio_uring}` tests.
macro_rules! per_backend {
    ($($name:ident => $case:path),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn uring() {
                    crate::harness::run_case("uring", $case);
                }
                #[test]
                fn epoll() {
                    crate::harness::run_case("epoll", $case);
                }
                #[test]
                fn tokio_uring() {
                    crate::harness::run_case("tokio-uring", $case);
                }
            }
        )*
    };
}

per_backend! {
    llhttp_corpus_replay => crate::corpus::replay,
    http11_conformance_cases => crate::conformance::conformance,
    big_file_byte_exact => crate::static_files::big_file,
    big_file_two_slow_readers => crate::static_files::slow_readers,
    close_after_big_response_loses_nothing => crate::static_files::close_after_big_response,
    pipelined_16_mixed_requests => crate::limits::pipelining,
    thousand_concurrent_connections => crate::limits::thousand_connections,
    path_escapes_never_served => crate::escapes::path_escapes,
    path_escapes_with_follow_symlinks => crate::escapes::path_escapes_follow,
    header_timeout_closes_half_sent_request => crate::limits::header_timeout,
    sigterm_under_load_drains_and_exits_0 => crate::lifecycle::sigterm_under_load,
    sigterm_drain_answers_idle_keepalive_once => crate::lifecycle::sigterm_drain_grace,
    sigterm_backlog_answered_not_reset => crate::lifecycle::sigterm_backlog_answered,
    methods_dirs_and_headers => crate::static_files::methods_dirs_headers,
    ranges => crate::conditional::ranges,
    conditional_requests => crate::conditional::conditionals,
    precompressed_sidecars => crate::static_files::precompressed,
    connection_management => crate::limits::connection_management,
    expect_100_continue => crate::limits::expect_continue,
    request_limits_and_errors => crate::limits::request_errors,
    access_log_combined_format => crate::lifecycle::access_log,
    cli_port_in_use => crate::lifecycle::port_in_use,
    busy_poll_serves_then_sleeps => crate::lifecycle::busy_poll,
    abusive_clients_leak_nothing => crate::abuse::abusive_clients,
    sites_example_config_routes => crate::sites::example_routes,
    sites_unknown_host_and_site_handlers => crate::sites::unknown_host_and_site_handlers,
    sites_reload_under_load => crate::sites::reload_under_load,
    proxy_forwarding_rules => crate::proxy::forwarding_rules,
    proxy_response_framing => crate::proxy::response_framing,
    proxy_misbehaving_upstreams => crate::proxy::misbehaving_upstreams,
    proxy_retries_and_balancing => crate::proxy::retries_and_balancing,
    proxy_smuggling_never_reaches_upstream => crate::proxy::smuggling_never_reaches_upstream,
    proxy_gunicorn_behind_ringd => crate::proxy::gunicorn_stack,
    proxy_active_health_checks => crate::proxy::active_health_checks,
    proxy_response_cache => crate::proxy::response_cache,
    proxy_compression => crate::proxy::compression,
    proxy_websocket_tunnel => crate::tunnel::websocket_tunnel,
    proxy_streamed_request_bodies => crate::tunnel::streamed_request_bodies,
    proxy_streamed_body_to_slow_upstream => crate::tunnel::streamed_body_to_slow_upstream,
    proxy_bodies_survive_random_timing => crate::integrity::proxied_bodies_survive_random_timing,
    proxy_splice_large_and_small_bodies => crate::splice::bodies_large_and_small,
    proxy_splice_body_cut_short => crate::splice::body_cut_short,
    proxy_splice_slow_reader_backpressure => crate::splice::slow_reader_backpressure,
    proxy_splice_tunnel_two_megabytes_each_way => crate::splice::tunnel_two_megabytes_each_way,
    proxy_splice_streamed_request_bodies => crate::splice::request_bodies_streamed,
    proxy_splice_no_pipe_free_falls_back_to_copying => crate::splice::no_pipe_free_falls_back_to_copying,
    proxy_splice_never_to_tls_clients => crate::splice::tls_clients_are_never_spliced,
    proxy_slow_client_is_no_upstream_timeout => crate::splice::slow_client_is_no_upstream_timeout,
    redirect_placeholders_never_open_redirect => crate::security::redirect_placeholders_never_open_redirect,
    redirect_placeholders_never_inject_headers => crate::security::redirect_placeholders_never_inject_headers,
    host_header_abuse_is_refused => crate::security::host_header_abuse_is_refused,
    rewrites_and_try_files_stay_in_root => crate::security::rewrites_and_try_files_stay_in_root,
    cache_revalidation_conditionals_and_ranges => crate::cache::revalidation_conditionals_and_ranges,
    cache_stale_while_revalidate_and_if_error => crate::cache::stale_while_revalidate_and_if_error,
    cache_collapsing_100_misses_one_fetch_per_worker => crate::cache::collapsing,
    cache_purge_status_and_log => crate::cache::purge_status_and_log,
    tls_basics_keepalive_big_pipelined => crate::tls::basics,
    tls_plain_request_to_tls_port_400 => crate::tls::plain_request_to_tls_port,
    tls_bad_and_slow_handshakes => crate::tls::bad_and_slow_handshakes,
    tls_sites_sni_mixed_listener_redirect_http => crate::tls::sites_sni_mixed_redirect,
    tls_internal_ca => crate::tls::internal_ca,
    acme_http01_issue_and_reuse_after_restart => crate::acme::http01_issue_and_reuse_after_restart,
    no_splice_pipe_still_sends_file_bodies => crate::faults::no_splice_pipe_still_sends_file_bodies,
    emfile_flood_keeps_serving_and_accepts_again => crate::faults::emfile_flood_keeps_serving_and_accepts_again,
    lost_upstream_logged_once_out_and_once_back => crate::faults::lost_upstream_logged_once_out_and_once_back,
}

/// The uring driver's splices run in its worker, not in io-wq threads.
mod uring_only {
    #[test]
    fn uring_splices_in_the_worker() {
        crate::splice::uring_splices_in_the_worker();
    }
}

/// CGI spawn failures and reloads of CGI configs (issue 16's fault runs).
mod cgi_faults {
    #[test]
    fn cgi_that_cannot_start_is_logged_once() {
        crate::faults::cgi_that_cannot_start_is_logged_once();
    }
    #[test]
    fn cgi_without_pipes_answers_503_logged_once() {
        crate::harness::catch_skip(
            "pipe budget",
            crate::faults::cgi_without_pipes_answers_503_logged_once,
        );
    }
    #[test]
    fn reload_with_cgi_reports_no_backend_change() {
        crate::faults::reload_with_cgi_reports_no_backend_change();
    }
}

/// Backend-independent CLI behaviour.
#[test]
fn cli_missing_root_is_a_clear_error() {
    lifecycle::missing_root();
}

/// Proxying (`--proxy` and proxy routes) on every backend (no gunicorn: `SKIP`, unless
/// `RINGD_REQUIRE_GUNICORN` is set).
#[test]
fn proxy_auto_keeps_its_backend_choice() {
    proxy::auto_keeps_its_choice();
}

/// CGI on the uring and epoll backends; tokio-uring refuses a CGI config with a clear error.
mod cgi_scripts {
    macro_rules! uring_and_epoll {
        ($($name:ident => $case:path),* $(,)?) => {
            $(
                mod $name {
                    #[test]
                    fn uring() {
                        crate::harness::run_case("uring", $case);
                    }
                    #[test]
                    fn epoll() {
                        crate::harness::run_case("epoll", $case);
                    }
                }
            )*
        };
    }
    uring_and_epoll! {
        scripts_run_per_rfc_3875 => crate::cgi::scripts_run_per_rfc_3875,
        misbehaving_scripts => crate::cgi::misbehaving_scripts,
        timeout_kills_the_script => crate::cgi::timeout_kills_the_script,
    }
    #[test]
    fn tokio_uring_refuses_cgi() {
        crate::cgi::tokio_uring_refuses_cgi();
    }
}

/// WSGI apps on the real `ringd-wsgi` (the Python package), on its uring and epoll loops:
/// `SKIP` without it in .venv/, unless `RINGD_REQUIRE_WSGI` is set.
mod wsgi_apps {
    macro_rules! both {
        ($($name:ident => $case:path),* $(,)?) => {
            $(
                mod $name {
                    #[test]
                    fn uring() {
                        crate::harness::catch_skip("wsgi", || crate::wsgi::on_backend("uring", $case));
                    }
                    #[test]
                    fn epoll() {
                        crate::harness::catch_skip("wsgi", || crate::wsgi::on_backend("epoll", $case));
                    }
                }
            )*
        };
    }
    both! {
        hello_app => crate::wsgi::hello_app,
        environ_keys => crate::wsgi::environ_keys,
        input_and_100_continue => crate::wsgi::input_and_continue,
        wsgiref_validator_passes => crate::wsgi::validator_passes,
        response_rules => crate::wsgi::response_rules,
        misbehaving_apps => crate::wsgi::misbehaving_apps,
        timeout_replaces_worker => crate::wsgi::timeout_replaces_worker,
        flask_app => crate::wsgi::flask_app,
        django_project => crate::wsgi::django_project,
        config_route => crate::wsgi::config_route,
        reload_and_max_requests => crate::wsgi::reload_and_max_requests,
        input_streams_with_backpressure => crate::wsgi_stream::upload_streams_with_backpressure,
        input_unread_bodies_keep_alive => crate::wsgi_stream::unread_bodies_keep_alive,
        input_client_breaks_off_mid_body => crate::wsgi_stream::client_breaks_off_mid_body,
        input_flask_chunked_upload_streams => crate::wsgi_stream::flask_chunked_upload_streams,
        leaked_files_are_closed => crate::wsgi_stream::leaked_files_are_closed,
    }
}

#[test]
fn cli_check_reports_file_line_col() {
    sites::check_subcommand();
}

#[test]
fn cli_doctor_reports_io_uring_and_backends() {
    lifecycle::doctor();
}
