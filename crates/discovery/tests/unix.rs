//! Unix specifics: file and directory modes, owners, and symlinks.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use pipegate_discovery::{new_nonce, path_security, ErrorKind, InstanceMode, Record};
use pipegate_transport::Endpoint;
use support::{registry, temp_dir};

fn record() -> Record {
    Record::new(
        vec![Endpoint::parse("/tmp/x.sock").unwrap()],
        InstanceMode::Agent,
        None,
        new_nonce().unwrap(),
    )
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn records_are_0600_in_0700_directories() {
    let dir = temp_dir();
    let reg = registry(&dir);
    reg.write("app", &record()).unwrap();
    assert_eq!(mode(reg.root()), 0o700, "{}", reg.root().display());
    assert_eq!(mode(reg.dir()), 0o700, "{}", reg.dir().display());
    assert_eq!(mode(&reg.record_path("app").unwrap()), 0o600);
    let security = path_security(reg.dir()).unwrap();
    assert!(security.private && security.owned_by_me, "{security:?}");
    assert_eq!(security.mode, Some(0o700));
}

#[test]
fn a_loose_records_directory_is_tightened_and_a_loose_parent_left_alone() {
    let dir = temp_dir();
    let reg = registry(&dir);
    std::fs::create_dir_all(reg.dir()).unwrap();
    std::fs::set_permissions(reg.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(reg.dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    reg.write("app", &record()).unwrap();
    assert_eq!(mode(reg.dir()), 0o700);
    assert_eq!(mode(reg.root()), 0o755, "the shared parent keeps its mode");
}

#[test]
fn a_symlink_is_refused_on_read_and_on_write() {
    let dir = temp_dir();
    let reg = registry(&dir);
    reg.write("real", &record()).unwrap();
    let target = dir.path().join("elsewhere.json");
    std::fs::write(&target, record().to_json()).unwrap();
    let link = reg.record_path("link").unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let err = reg.read("link").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Symlink);
    assert!(err.to_string().contains("symbolic link"), "{err}");

    let before = std::fs::read_to_string(&target).unwrap();
    let err = reg.write("link", &record()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Symlink);
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        before,
        "target untouched"
    );
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());

    // Listing shows the link as an error and still lists the real record.
    let listed = reg.list().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].name, "link");
    assert_eq!(
        listed[0].record.as_ref().unwrap_err().kind(),
        ErrorKind::Symlink
    );
    assert!(listed[1].record.is_ok());
}

#[tokio::test]
async fn a_symlinked_records_directory_is_refused() {
    let dir = temp_dir();
    let reg = registry(&dir);
    let real = dir.path().join("real-instances");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir(reg.root()).unwrap();
    std::os::unix::fs::symlink(&real, reg.dir()).unwrap();
    let err = reg.write("app", &record()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InsecureDirectory, "{err}");
    let err = reg
        .claim("app", &pipegate_discovery::ClaimOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InsecureDirectory, "{err}");
}

/// Only root can give a directory away; as anyone else this checks nothing and says so.
#[test]
fn a_records_directory_owned_by_someone_else_is_refused() {
    let dir = temp_dir();
    let reg = registry(&dir);
    std::fs::create_dir_all(reg.dir()).unwrap();
    if let Err(e) = std::os::unix::fs::chown(reg.dir(), Some(65534), Some(65534)) {
        eprintln!(
            "note: cannot chown as this user ({e}); the foreign-owner check was not exercised"
        );
        return;
    }
    let err = reg.write("app", &record()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InsecureDirectory);
    assert!(err.to_string().contains("owned by uid 65534"), "{err}");
}
