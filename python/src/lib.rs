//! ringd-wsgi: ringd's core and its uring (or epoll) driver inside the app's own CPython, serving WSGI apps
//! (PEP 3333). The Python side (`ringd_wsgi/__main__.py`) is the master: it calls `prepare`
//! (flags → config → listeners bound, nothing started), forks one process per worker, and
//! replaces workers that exit. In a worker, `Master.run_worker` imports the app, starts
//! `--threads` app threads and runs ringd's worker loop with the GIL released: the loop's
//! I/O thread never takes the GIL; app threads take calls from `ringd::driver::app`'s queue
//! and hold the GIL only while they run Python.

mod app;
#[allow(dead_code, clippy::all, clippy::pedantic)]
#[path = "../../src/cli.rs"]
mod cli;
mod host;

use pyo3::prelude::*;

#[pymodule]
fn _ringd(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(host::prepare, m)?)?;
    m.add_class::<host::Master>()?;
    m.add_class::<app::StartResponse>()?;
    m.add_class::<app::Input>()?;
    m.add_class::<app::FileWrapper>()?;
    Ok(())
}
