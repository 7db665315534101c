//! The `warmstart` binary: a thin command line over the library.

mod cli;

use clap::Parser;

/// mimalloc keeps freed pages for reuse: training frees and reallocates the same large
/// activation buffers every batch, which glibc returns to the kernel and faults in again.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // With no command at all, do the whole pipeline.
    if args.len() == 1 {
        args.push("run".into());
    }
    let cli = cli::Cli::parse_from(args);
    match cli::dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // 130 is the shell's code for "stopped by Ctrl-C".
            let interrupted = matches!(
                e.downcast_ref::<warmstart::Error>(),
                Some(warmstart::Error::Interrupted { .. })
            );
            std::process::ExitCode::from(if interrupted { 130 } else { 1 })
        }
    }
}
