//! The `tally` binary as a user runs it from a shell.

use std::process::{Command, Stdio};

/// `tally ... | head -1`: once the reader of its output is gone, a command stops quietly
/// (status 0, nothing on stderr) instead of panicking on the broken pipe.
#[test]
fn a_command_whose_reader_went_away_stops_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["testnet", "init", "--validators", "4", "--accounts", "2000"])
        .arg("--out")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tally runs");
    // The reader goes away before reading anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("tally exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}

/// `tally bench --rate 0` has nothing to measure: it says so at once, naming the flag, instead
/// of running a network for half a minute and printing nothing.
#[test]
fn a_benchmark_without_load_is_refused_naming_the_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["bench", "--rate", "0"])
        .output()
        .expect("tally runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--rate"), "{stderr}");
}

/// Shell completion scripts name the commands, for every shell clap knows.
#[test]
fn completion_scripts_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(["completions", shell])
            .output()
            .expect("tally runs");
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("devnet") && script.contains("keygen"),
            "{shell}: {script}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["completions", "tcsh"])
        .output()
        .expect("tally runs");
    assert!(!out.status.success());
}
