//! The `ringd` binary: flags → Config → workers → exit code.

fn main() {
    println!("ringd: not yet");
}
