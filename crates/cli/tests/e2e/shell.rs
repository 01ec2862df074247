//! `pipegate shell` in a real terminal: tmux runs it, `send-keys` types, `capture-pane`
//! reads the screen. The agent is a real `pipegate serve` on the default endpoint.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::support::process::child_named;
use crate::support::{pipegate, within, Proc, TestEnv, PIPEGATE, STARTUP};

/// A private tmux server with one session, `main`; killed when dropped. (Also used by
/// the Windows console test in `windows.rs`.)
pub(crate) struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    /// Starts `command` (a shell command line) in a `width`×`height` window.
    pub(crate) fn start(env: &TestEnv, command: &str, width: u16, height: u16) -> Tmux {
        let conf = env.path("tmux.conf");
        std::fs::write(&conf, "set -g status off\nset -g remain-on-exit off\n").unwrap();
        let tmux = Tmux {
            socket: env.path("tmux.sock"),
        };
        let out = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&tmux.socket)
            .arg("-f")
            .arg(&conf)
            .args(["new-session", "-d", "-s", "main", "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .arg(command)
            .env("TERM", "xterm-256color")
            .output()
            .expect("run tmux");
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    pub(crate) fn run(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `text` literally, then Enter.
    pub(crate) fn type_line(&self, text: &str) {
        self.run(&["send-keys", "-t", "main", "-l", text]);
        self.run(&["send-keys", "-t", "main", "Enter"]);
    }

    pub(crate) fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "main"])
    }

    /// Waits until the screen shows `needle`.
    pub(crate) async fn wait_for(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the screen did not show {needle:?} within {limit:?}:\n```\n{screen}\n```"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

/// `pipegate serve` with no --listen and no --upstream: the agent on the default
/// endpoint under `xdg`.
async fn serve_agent(xdg: &Path) -> Proc {
    let mut cmd = pipegate(&["serve"]);
    cmd.env("XDG_RUNTIME_DIR", xdg).env("PS1", "remote$ ");
    let proc = Proc::spawn("pipegate serve", cmd, true);
    proc.wait_listening(STARTUP).await;
    proc
}

fn private_dir(env: &TestEnv, name: &str) -> PathBuf {
    let dir = env.path(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

pub(crate) async fn wait_file(path: &Path, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} not written within {limit:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Output, resize, Ctrl-C and the exit code, in a real terminal; the terminal is back
/// to normal afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_in_tmux_resizes_interrupts_and_exits_with_the_code() {
    let env = TestEnv::new();
    let xdg = private_dir(&env, "xdg");
    let serve = serve_agent(&xdg).await;
    let exit_file = env.path("exit.txt");
    let stty_file = env.path("stty.txt");
    // After pipegate shell: its exit code, and the local terminal's settings.
    let command = format!(
        "XDG_RUNTIME_DIR='{xdg}' '{PIPEGATE}' shell -- /bin/sh; \
         echo \"pipegate-exit=$?\" > '{exit}'; stty -a > '{stty}'; sleep 600",
        xdg = xdg.display(),
        exit = exit_file.display(),
        stty = stty_file.display(),
    );
    let tmux = Tmux::start(&env, &command, 100, 30);
    tmux.wait_for("remote$", STARTUP).await;

    tmux.type_line("echo hello-$((40+2))");
    tmux.wait_for("hello-42", STARTUP).await;

    tmux.type_line("stty size");
    tmux.wait_for("30 100", STARTUP).await;
    tmux.run(&["resize-window", "-t", "main", "-x", "120", "-y", "40"]);
    // The new size reaches the remote terminal through SIGWINCH → channel 4.
    let deadline = Instant::now() + STARTUP;
    loop {
        tmux.type_line("stty size");
        tokio::time::sleep(Duration::from_millis(300)).await;
        if tmux.screen().contains("40 120") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stty size never showed 40 120:\n{}",
            tmux.screen()
        );
    }

    // Only an interrupted sleep lets the next command run.
    tmux.type_line("sleep 1000");
    // The remote shell (a child of serve) runs sleep in the foreground.
    let deadline = Instant::now() + STARTUP;
    while child_named(serve.pid(), "sh")
        .and_then(|sh| child_named(sh, "sleep"))
        .is_none()
    {
        assert!(Instant::now() < deadline, "the remote sleep never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tmux.run(&["send-keys", "-t", "main", "C-c"]);
    tmux.type_line("echo after-$((1+1))");
    tmux.wait_for("after-2", STARTUP).await;

    tmux.type_line("exit 3");
    let exit = wait_file(&exit_file, STARTUP).await;
    assert_eq!(exit.trim(), "pipegate-exit=3");
    let stty = wait_file(&stty_file, STARTUP).await;
    let settings: Vec<&str> = stty.split_whitespace().collect();
    for setting in ["icanon", "echo", "isig", "opost"] {
        assert!(
            settings.contains(&setting),
            "the terminal was not restored ({setting:?} missing):\n{stty}"
        );
    }
}

/// SIGTERM to `pipegate shell`: the terminal is restored, the exit code is 128 + 15,
/// and the remote session is ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_restores_the_terminal_when_terminated() {
    let env = TestEnv::new();
    let xdg = private_dir(&env, "xdg");
    let serve = serve_agent(&xdg).await;
    let exit_file = env.path("exit.txt");
    let stty_file = env.path("stty.txt");
    let command = format!(
        "XDG_RUNTIME_DIR='{xdg}' '{PIPEGATE}' shell -- /bin/sh; \
         echo \"pipegate-exit=$?\" > '{exit}'; stty -a > '{stty}'; sleep 600",
        xdg = xdg.display(),
        exit = exit_file.display(),
        stty = stty_file.display(),
    );
    let tmux = Tmux::start(&env, &command, 80, 24);
    tmux.wait_for("remote$", STARTUP).await;
    let wrapper: u32 = tmux
        .run(&["list-panes", "-t", "main", "-F", "#{pane_pid}"])
        .trim()
        .parse()
        .unwrap();
    let shell = child_named(wrapper, "pipegate").expect("pipegate shell's pid");
    let status = std::process::Command::new("kill")
        .args(["-s", "TERM", &shell.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = wait_file(&exit_file, STARTUP).await;
    assert_eq!(exit.trim(), "pipegate-exit=143");
    let stty = wait_file(&stty_file, STARTUP).await;
    let settings: Vec<&str> = stty.split_whitespace().collect();
    for setting in ["icanon", "echo", "isig", "opost"] {
        assert!(
            settings.contains(&setting),
            "the terminal was not restored ({setting:?} missing):\n{stty}"
        );
    }
    serve
        .wait_stderr(STARTUP, "the remote session to end", |l| {
            l.contains("session program exited") && l.contains("SIGHUP")
        })
        .await;
}

/// Without a terminal, stdin is the program's input and its end ends the program; the
/// exit code comes back; stdout and stderr stay apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_without_a_terminal_pipes_stdin_and_keeps_the_exit_code() {
    let env = TestEnv::new();
    let xdg = private_dir(&env, "xdg");
    let _serve = serve_agent(&xdg).await;
    let mut cmd = pipegate(&["shell", "--", "sh"]);
    cmd.env("XDG_RUNTIME_DIR", &xdg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut proc = Proc::spawn("pipegate shell", cmd, false);
    let mut stdin = proc.child.stdin.take().unwrap();
    stdin
        .write_all(b"echo to-stdout; echo to-stderr >&2; exit 4\n")
        .await
        .unwrap();
    drop(stdin);
    let mut stdout = proc.child.stdout.take().unwrap();
    let mut out = Vec::new();
    within(
        STARTUP,
        "pipegate shell's stdout",
        tokio::io::AsyncReadExt::read_to_end(&mut stdout, &mut out),
    )
    .await
    .unwrap();
    let status = proc.wait_exit(STARTUP).await;
    assert_eq!(String::from_utf8_lossy(&out), "to-stdout\n");
    assert_eq!(status.code(), Some(4), "{}", proc.dump());
    assert!(
        proc.stderr_lines().iter().any(|l| l == "to-stderr"),
        "{}",
        proc.dump()
    );
}

/// No agent there: a clear message naming the endpoint, with the hint, and exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_says_when_no_agent_is_there() {
    let env = TestEnv::new();
    let missing = format!("unix://{}", env.sock("none.sock").display());
    let mut proc = Proc::spawn(
        "pipegate shell",
        pipegate(&["shell", &missing, "--", "true"]),
        true,
    );
    let status = proc.wait_exit(STARTUP).await;
    assert_eq!(status.code(), Some(1), "{}", proc.dump());
    let stderr = proc.stderr_text();
    assert!(
        stderr.contains(&format!("cannot reach the pipegate agent at {missing}")),
        "{stderr}"
    );
    assert!(stderr.contains("hint: start the server first"), "{stderr}");
}
