//! The `warmstart` binary: a thin command line over the library.

mod cli;

use clap::Parser;

/// mimalloc keeps freed memory for reuse. Training frees and reallocates the same activation
/// buffers every batch; glibc (and mimalloc's default 10 ms purge) hand them back to the kernel,
/// which then faults them in and zeroes them again (~10% of a training step).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the vendored mimalloc (v3, and v2): `libmimalloc-sys` does not
/// name it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> std::process::ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // With no command at all, do the whole pipeline.
    if args.len() == 1 {
        args.push("run".into());
    }
    let cli = cli::Cli::parse_from(args);
    // Never purge: memory stays at its peak instead of being re-faulted every batch
    // (`perf stat -e page-faults warmstart bench`: 5,425 faults with the default, 542 without).
    // Purge at once in the servers instead: an upload's (or a pool image's) decode is freed for
    // good, not kept for the next one (which may land on another thread): `label` peaked at
    // 734 MiB for a 320 MiB decode budget without it.
    let delay = if matches!(
        cli.command,
        Some(cli::Command::Serve(_) | cli::Command::Label(_))
    ) {
        0
    } else {
        -1
    };
    // SAFETY: sets a documented mimalloc option, before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, delay) };
    match cli::dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // 130 is the shell's code for "stopped by Ctrl-C".
            let interrupted = e
                .downcast_ref::<warmstart::Error>()
                .is_some_and(warmstart::Error::is_interruption);
            std::process::ExitCode::from(if interrupted { 130 } else { 1 })
        }
    }
}
