//! Printing for the command-line tools, which may write into a pipe that the reader closes early
//! (`perch fleet status --json | head -2`).
//!
//! SIGPIPE stays ignored in every command: the CLI tools hold MQTT and HTTP sockets too, and a peer that
//! closes one while a last packet is written (a broker at disconnect) would otherwise kill the process by
//! the signal, after its work was done, with no exit code. So the closed pipe is seen here, as an error of
//! the write, and the tool ends quietly with success: the reader chose to stop reading.

use std::io::Write;

/// Writes to standard output; a closed pipe ends the process quietly, any other failure loudly.
pub fn write(args: std::fmt::Arguments) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// `print!` for the CLI tools (see the module).
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::util::stdout::write(format_args!($($t)*)) };
}

/// `println!` for the CLI tools (see the module).
#[macro_export]
macro_rules! outln {
    () => { $crate::util::stdout::write(format_args!("\n")) };
    ($($t:tt)*) => { $crate::util::stdout::write(format_args!("{}\n", format_args!($($t)*))) };
}
