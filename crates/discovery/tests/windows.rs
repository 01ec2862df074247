//! Windows specifics: the protected DACL on the records directories.
#![cfg(windows)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use pipegate_discovery::{new_nonce, path_security, InstanceMode, Record};
use pipegate_transport::Endpoint;
use support::{registry, temp_dir};

/// Wine (the Linux test runner) accepts `SetNamedSecurityInfoW` on files but does not
/// store the DACL: reading it back yields a default one. Under Wine that is reported,
/// not passed silently; on Windows the DACL is checked.
fn under_wine() -> bool {
    std::env::var_os("WINEPREFIX").is_some() || std::env::var_os("WINELOADER").is_some()
}

#[test]
fn the_records_directories_get_a_protected_user_and_system_dacl() {
    let dir = temp_dir();
    let reg = registry(&dir);
    let record = Record::new(
        vec![Endpoint::parse("npipe://pipegate").unwrap()],
        InstanceMode::Agent,
        None,
        new_nonce().unwrap(),
    );
    reg.write("app", &record).unwrap();
    assert_eq!(reg.read("app").unwrap().unwrap(), record);
    for path in [reg.root(), reg.dir()] {
        let security = path_security(path).unwrap();
        assert!(security.owned_by_me, "{security:?}");
        if !security.private && under_wine() {
            eprintln!(
                "note: Wine does not store file DACLs, so the DACL of {} cannot be checked \
                 here (read back: {})",
                path.display(),
                security.description
            );
            continue;
        }
        assert!(security.description.contains("DACL D:P"), "{security:?}");
        assert!(
            !security.description.contains(";;;WD)"),
            "Everyone must not be granted: {security:?}"
        );
        assert!(security.private, "{security:?}");
    }
}
