//! Unix domain sockets: secure bind (modes, directory checks, stale and live sockets,
//! files that are not ours), removal on drop, errors, concurrency, half-close and bulk
//! transfer through the relay.
#![cfg(unix)]
// Helpers outside the #[test] functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use pipegate_transport::{
    connect, ConnectOptions, Endpoint, ErrorKind, ListenOptions, Listener, Mode,
};
use support::{bind, within, STEP};

fn endpoint(path: &Path) -> Endpoint {
    Endpoint::parse(path.to_str().expect("UTF-8 temp path")).expect("valid unix endpoint")
}

async fn bind_err(endpoint: &Endpoint) -> pipegate_transport::Error {
    within(
        STEP,
        Listener::bind(endpoint, &ListenOptions::new()),
        "bind",
    )
    .await
    .expect_err("bind should fail")
}

/// Permission bits (including setuid/setgid/sticky) of `path` itself, not a link target.
fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .mode()
        & 0o7777
}

fn is_socket(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Creates `dir` and sets exactly `mode` (not filtered by the umask).
fn mkdir_mode(dir: &Path, mode: u32) {
    fs::create_dir(dir).expect("mkdir");
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn round_trip_and_peer_info() {
    let dir = support::temp_dir();
    let ep = endpoint(&dir.path().join("api.sock"));
    let listener = bind(&ep).await;
    assert_eq!(listener.local_endpoint(), &ep);
    let (peer, half_close, client, _server) = support::hello_world(listener, &ep).await;

    assert_eq!(peer.mode, Mode::Unix);
    assert_eq!(peer.endpoint, ep);
    assert_eq!(peer.uid, Some(rustix::process::geteuid().as_raw()));
    #[cfg(target_os = "linux")]
    assert_eq!(
        peer.pid,
        Some(std::process::id()),
        "SO_PEERCRED gives our pid"
    );
    assert_eq!(peer.addr, None);
    assert!(half_close);

    assert_eq!(client.mode(), Mode::Unix);
    assert_eq!(client.peer().endpoint, ep);
    assert_eq!(client.peer().addr, None);
    assert!(client.supports_half_close());
}

#[tokio::test]
async fn socket_is_0600_and_created_parent_dirs_are_private() {
    let dir = support::temp_dir();
    let outer = dir.path().join("run");
    let inner = outer.join("pipegate");
    let path = inner.join("api.sock");
    assert!(!outer.exists());
    let listener = bind(&endpoint(&path)).await;

    assert!(is_socket(&path), "a socket at {}", path.display());
    assert_eq!(mode(&path), 0o600, "socket mode");
    assert_eq!(mode(&inner), 0o700, "the socket's new parent directory");
    assert!(fs::metadata(&inner).expect("stat").is_dir());
    assert_eq!(
        mode(&outer) & 0o077,
        0,
        "an intermediate directory created on the way is not open to others"
    );
    assert_eq!(entries(&inner), ["api.sock"]);

    support::spawn_echo_server(listener);
    support::echo_once(&endpoint(&path), b"through a new directory").await;
}

#[tokio::test]
async fn group_or_world_writable_parent_is_refused() {
    for bad_mode in [0o777, 0o770, 0o1777, 0o720] {
        let dir = support::temp_dir();
        let shared = dir.path().join("shared");
        mkdir_mode(&shared, bad_mode);
        let path = shared.join("api.sock");
        let err = bind_err(&endpoint(&path)).await;
        assert_eq!(
            err.kind(),
            ErrorKind::InsecureDirectory,
            "mode {bad_mode:o}: {err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&format!("{bad_mode:04o}")), "{msg}");
        assert!(
            entries(&shared).is_empty(),
            "nothing may be created in a {bad_mode:o} directory: {:?}",
            entries(&shared)
        );
        assert_eq!(
            mode(&shared),
            bad_mode,
            "the directory's mode is not changed"
        );
    }
}

#[tokio::test]
async fn parent_owned_by_someone_else_is_refused() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to give a directory to another user");
        return;
    }
    let dir = support::temp_dir();
    let theirs = dir.path().join("theirs");
    mkdir_mode(&theirs, 0o700);
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).expect("chown");
    let err = bind_err(&endpoint(&theirs.join("api.sock"))).await;
    assert_eq!(err.kind(), ErrorKind::InsecureDirectory, "{err}");
    assert!(err.to_string().contains("owned by uid 65534"), "{err}");
    assert!(entries(&theirs).is_empty());
}

#[tokio::test]
async fn parent_that_is_a_file_is_refused() {
    let dir = support::temp_dir();
    let file = dir.path().join("not-a-dir");
    fs::write(&file, b"x").expect("write");
    let err = bind_err(&endpoint(&file.join("api.sock"))).await;
    assert_eq!(err.kind(), ErrorKind::InsecureDirectory, "{err}");
    assert_eq!(fs::read(&file).expect("read"), b"x");
}

#[tokio::test]
async fn shared_0755_parent_binds_through_a_private_temp_dir() {
    let dir = support::temp_dir();
    let shared = dir.path().join("shared");
    mkdir_mode(&shared, 0o755);
    let path = shared.join("api.sock");
    let ep = endpoint(&path);
    let mut listener = bind(&ep).await;

    assert!(is_socket(&path));
    assert_eq!(mode(&path), 0o600, "socket mode in a 0755 directory");
    assert_eq!(
        mode(&shared),
        0o755,
        "an existing directory's mode is left alone"
    );
    assert_eq!(
        fs::symlink_metadata(&path).expect("stat").nlink(),
        1,
        "the temporary link is gone"
    );
    assert_eq!(
        entries(&shared),
        ["api.sock"],
        "no .pg* temporary directory is left behind"
    );

    // The hard-linked socket is the listening one.
    let client = tokio::spawn({
        let ep = ep.clone();
        async move { support::echo_once(&ep, b"via the hard link").await }
    });
    let stream = within(STEP, listener.accept(), "accept")
        .await
        .expect("accept");
    assert_eq!(stream.peer().uid, Some(rustix::process::geteuid().as_raw()));
    tokio::spawn(support::echo(stream));
    within(STEP, client, "client").await.expect("client task");

    drop(listener);
    assert!(entries(&shared).is_empty(), "{:?}", entries(&shared));
}

#[tokio::test]
async fn stale_socket_is_replaced() {
    let dir = support::temp_dir();
    let path = dir.path().join("api.sock");
    // A socket file whose listener is gone: std does not unlink on drop.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("std bind"));
    assert!(is_socket(&path));
    let old_ino = fs::metadata(&path).expect("stat").ino();

    let ep = endpoint(&path);
    let err = within(STEP, connect(&ep, &ConnectOptions::new()), "connect")
        .await
        .expect_err("nothing answers on a stale socket");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    let listener = bind(&ep).await;
    assert!(is_socket(&path));
    assert_ne!(
        fs::metadata(&path).expect("stat").ino(),
        old_ino,
        "a new socket file"
    );
    assert_eq!(mode(&path), 0o600);
    support::spawn_echo_server(listener);
    support::echo_once(&ep, b"on the reclaimed path").await;
}

#[tokio::test]
async fn live_socket_is_refused_and_keeps_serving() {
    let dir = support::temp_dir();
    let path = dir.path().join("api.sock");
    let ep = endpoint(&path);
    let first = bind(&ep).await;
    let ino = fs::metadata(&path).expect("stat").ino();
    support::spawn_echo_server(first);

    let err = bind_err(&ep).await;
    assert_eq!(err.kind(), ErrorKind::AddrInUse, "{err}");
    assert!(
        err.to_string()
            .contains("is already in use by another process"),
        "{err}"
    );
    assert_eq!(
        fs::metadata(&path).expect("stat").ino(),
        ino,
        "the live socket is untouched"
    );
    support::echo_once(&ep, b"the first listener still serves").await;
}

#[tokio::test]
async fn regular_file_at_the_path_is_never_replaced() {
    let dir = support::temp_dir();
    let path = dir.path().join("api.sock");
    fs::write(&path, b"precious data").expect("write");
    let err = bind_err(&endpoint(&path)).await;
    assert_eq!(err.kind(), ErrorKind::NotASocket, "{err}");
    assert!(err.to_string().contains("never deletes it"), "{err}");
    assert_eq!(fs::read(&path).expect("read"), b"precious data");
    assert_eq!(entries(dir.path()), ["api.sock"]);
}

#[tokio::test]
async fn symlink_at_the_path_is_never_replaced() {
    let dir = support::temp_dir();
    let target = dir.path().join("target.txt");
    fs::write(&target, b"link target").expect("write");
    // A link to a file, a dangling link, and a link to a stale socket: all refused.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("std bind"));
    for (name, to) in [
        ("to-file.sock", target.clone()),
        ("dangling.sock", dir.path().join("missing")),
        ("to-socket.sock", stale.clone()),
    ] {
        let path = dir.path().join(name);
        std::os::unix::fs::symlink(&to, &path).expect("symlink");
        let err = bind_err(&endpoint(&path)).await;
        assert_eq!(err.kind(), ErrorKind::NotASocket, "{name}: {err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(
            fs::symlink_metadata(&path)
                .expect("lstat")
                .file_type()
                .is_symlink(),
            "{name} is still a symlink"
        );
        assert_eq!(fs::read_link(&path).expect("readlink"), to);
    }
    assert_eq!(fs::read(&target).expect("read"), b"link target");
    assert!(is_socket(&stale), "the link's target socket is untouched");
}

#[tokio::test]
async fn dropping_the_listener_removes_its_socket() {
    let dir = support::temp_dir();
    let path = dir.path().join("api.sock");
    let listener = bind(&endpoint(&path)).await;
    assert!(is_socket(&path));
    drop(listener);
    assert!(!path.exists(), "socket file removed on drop");
    assert!(fs::symlink_metadata(&path).is_err());
}

#[tokio::test]
async fn dropping_the_listener_leaves_a_replacement_file_alone() {
    let dir = support::temp_dir();
    let path = dir.path().join("api.sock");
    let listener = bind(&endpoint(&path)).await;
    fs::remove_file(&path).expect("unlink ours");
    fs::write(&path, b"someone else's file").expect("write replacement");
    drop(listener);
    assert_eq!(
        fs::read(&path).expect("replacement kept"),
        b"someone else's file"
    );
}

#[tokio::test]
async fn dropping_the_listener_leaves_a_replacement_socket_alone() {
    let dir = support::temp_dir();
    let path = dir.path().join("api.sock");
    let ep = endpoint(&path);
    let listener = bind(&ep).await;
    fs::remove_file(&path).expect("unlink ours");
    let other = std::os::unix::net::UnixListener::bind(&path).expect("another socket");
    let other_ino = fs::metadata(&path).expect("stat").ino();
    drop(listener);
    assert!(is_socket(&path), "the replacement socket is still there");
    assert_eq!(fs::metadata(&path).expect("stat").ino(), other_ino);
    // ... and it still works: a client reaches the other listener.
    let client = within(STEP, connect(&ep, &ConnectOptions::new()), "connect")
        .await
        .expect("connect to the replacement");
    other.set_nonblocking(true).expect("nonblocking");
    let (_accepted, _) = other.accept().expect("the replacement accepted our client");
    drop(client);
}

#[tokio::test]
async fn path_longer_than_sun_path_is_refused() {
    let dir = support::temp_dir();
    let missing = dir.path().join("would-be-created");
    let path: PathBuf = missing.join("x".repeat(120));
    assert!(path.as_os_str().len() > 108);
    let err = bind_err(&endpoint(&path)).await;
    assert_eq!(err.kind(), ErrorKind::PathTooLong, "{err}");
    assert!(
        !missing.exists(),
        "nothing is created for a path that cannot be bound"
    );
    assert_eq!(err.into_io().kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn connect_to_a_missing_socket_is_not_found() {
    let dir = support::temp_dir();
    let ep = endpoint(&dir.path().join("nobody.sock"));
    assert!(ep.to_string().starts_with("unix://"), "{ep}");
    support::assert_nothing_listens(&ep).await;
}

#[tokio::test]
async fn named_pipes_are_unsupported_on_unix() {
    let ep = Endpoint::parse("npipe://x").expect("endpoint");
    let expected = "named pipe endpoints are only supported on Windows: npipe://x";
    let err = bind_err(&ep).await;
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert_eq!(err.to_string(), expected);
    let err = within(STEP, connect(&ep, &ConnectOptions::new()), "connect")
        .await
        .expect_err("connect fails");
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert_eq!(err.to_string(), expected);
    assert_eq!(err.into_io().kind(), std::io::ErrorKind::Unsupported);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_connections() {
    let dir = support::temp_dir();
    let ep = endpoint(&dir.path().join("api.sock"));
    support::spawn_echo_server(bind(&ep).await);
    support::concurrent_echo(&ep, 200, ConnectOptions::new()).await;
}

#[tokio::test]
async fn half_close_direct() {
    let dir = support::temp_dir();
    support::half_close_direct(bind(&endpoint(&dir.path().join("api.sock"))).await).await;
}

#[tokio::test]
async fn half_close_through_relay() {
    let dir = support::temp_dir();
    let front = bind(&endpoint(&dir.path().join("front.sock"))).await;
    let upstream = bind(&endpoint(&dir.path().join("upstream.sock"))).await;
    support::half_close_through_relay(front, upstream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_64_mib_with_checksum() {
    let dir = support::temp_dir();
    let front = bind(&endpoint(&dir.path().join("front.sock"))).await;
    let upstream = bind(&endpoint(&dir.path().join("upstream.sock"))).await;
    // 64 MiB up while 4 MiB comes back (SHA-256 in a debug build is the slow part).
    support::bulk_through_relay(front, upstream, 64 << 20, 4 << 20).await;
}

/// Connects to `path` as the `nobody` user (uid 65534) with `setpriv`, sends a line and
/// reports what it read back: `closed` if the server closed without answering.
fn connect_as_nobody(path: &Path) -> std::process::Child {
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
try:
    s.sendall(b"hello from nobody\n")
    data = s.recv(100)
    print("closed" if data == b"" else "got " + repr(data))
except (BrokenPipeError, ConnectionResetError):
    print("closed")
"#;
    std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            script,
        ])
        .arg(path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn setpriv (util-linux)")
}

/// Whether this test process can switch users (it must be root to run `setpriv`).
fn can_switch_users() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    eprintln!("NOTE: peer-uid tests need root (to connect as another user with setpriv); run the suite as root to enable them");
    false
}

/// A directory and socket that anyone may reach: the file modes no longer protect the
/// socket, so the peer check is what is tested.
async fn loosened_listener(options: ListenOptions) -> (tempfile::TempDir, PathBuf, Listener) {
    let dir = support::temp_dir();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let path = dir.path().join("open.sock");
    let listener = within(STEP, Listener::bind(&endpoint(&path), &options), "bind")
        .await
        .expect("bind");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).expect("chmod socket");
    (dir, path, listener)
}

#[tokio::test]
async fn another_users_connection_is_refused_before_any_byte_is_read() {
    if !can_switch_users() {
        return;
    }
    let (_dir, path, mut listener) = loosened_listener(ListenOptions::new()).await;
    let nobody = connect_as_nobody(&path);
    // Accept runs while nobody connects; it must skip that peer and return ours only.
    let accept = tokio::spawn(async move {
        let stream = listener.accept().await.expect("accept");
        (stream, listener)
    });
    let out = within(
        STEP,
        tokio::task::spawn_blocking(move || {
            let out = nobody.wait_with_output().expect("wait");
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        }),
        "the other user's client to finish",
    )
    .await
    .expect("join");
    assert_eq!(
        out.trim(),
        "closed",
        "the other user's connection must be closed unanswered"
    );
    let _ours = connect(&endpoint(&path), &ConnectOptions::new())
        .await
        .expect("connect");
    let (stream, _listener) = within(STEP, accept, "accept of our own connection")
        .await
        .expect("join");
    assert_eq!(
        stream.peer().uid,
        Some(0),
        "only our own connection is accepted"
    );
    assert_eq!(stream.peer().pid, Some(std::process::id()));
}

#[tokio::test]
async fn allow_uids_admits_the_named_user() {
    if !can_switch_users() {
        return;
    }
    let options = ListenOptions::new().allow_uids(vec![65534]);
    let (_dir, path, mut listener) = loosened_listener(options).await;
    let nobody = connect_as_nobody(&path);
    let stream = within(STEP, listener.accept(), "accept of the allowed user")
        .await
        .expect("accept");
    assert_eq!(stream.peer().uid, Some(65534));
    drop(stream);
    // The client reads EOF once we drop the stream, then exits.
    let out = tokio::task::spawn_blocking(move || nobody.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    assert!(out.status.success(), "{out:?}");
}
