//! Fuzz target bodies (`fuzz/` at the repository root), not part of the API.
//!
//! Each function takes the fuzzer's bytes and panics if an invariant breaks; the seed
//! corpus in `fuzz/corpus/<target>/` also runs through it in this crate's tests, so a
//! change that breaks an invariant on a seed fails `cargo test` without cargo-fuzz.

use crate::{Endpoint, Mode, ACCEPTED_FORMS, MAX_PIPE_NAME_LEN};

/// `endpoint_parse`: whatever parses prints canonically and parses back to itself;
/// whatever is refused says why and lists the accepted forms.
pub fn endpoint_parse(data: &[u8]) {
    let input = String::from_utf8_lossy(data);
    match Endpoint::parse(&input) {
        Ok(endpoint) => check_valid(&input, &endpoint),
        Err(err) => {
            assert_eq!(err.input(), input, "the error keeps the input");
            let message = err.to_string();
            assert!(message.contains(ACCEPTED_FORMS), "{message}");
        }
    }
}

fn check_valid(input: &str, endpoint: &Endpoint) {
    let shown = endpoint.to_string();
    let back = Endpoint::parse(&shown).unwrap_or_else(|err| {
        panic!("{input:?} parsed, but its display {shown:?} does not: {err}")
    });
    assert_eq!(&back, endpoint, "{input:?} → {shown:?} parses differently");
    assert_eq!(back.to_string(), shown, "display is canonical");
    let scheme = match endpoint.mode() {
        Mode::NamedPipe => "npipe://",
        Mode::Unix => "unix:///",
        Mode::Tcp => "tcp://",
    };
    assert!(shown.starts_with(scheme), "{shown:?} is not {scheme}…");
    match endpoint {
        Endpoint::NamedPipe(name) => {
            assert!((1..=MAX_PIPE_NAME_LEN).contains(&name.len()), "{name:?}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)),
                "{name:?}"
            );
            assert!(!name.contains(".."), "{name:?}");
            assert_eq!(endpoint.pipe_path(), Some(format!(r"\\.\pipe\{name}")));
        }
        Endpoint::Unix(path) => {
            assert!(path.starts_with('/') && !path.ends_with('/'), "{path:?}");
            assert!(!path.contains('\0'), "{path:?}");
            assert!(!path.split('/').any(|c| c == ".."), "{path:?}");
            assert!(endpoint.unix_path().is_some());
        }
        Endpoint::Tcp { host, .. } => {
            assert!(!host.is_empty(), "{input:?}");
            assert!(!host.contains(['[', ']', '/', '@', '?', '#']), "{host:?}");
            assert_eq!(host.to_ascii_lowercase(), *host, "hosts are lowercase");
        }
    }
}

/// Runs every committed seed of `fuzz/corpus/<target>` through `run`, printing each
/// seed's path first (so a failure names it). The crates' tests call this, so CI (which
/// has no cargo-fuzz) keeps the targets' invariants honest on the seeds. Test support:
/// it panics if the corpus cannot be read or is empty.
pub fn replay_seeds(target: &str, run: impl Fn(&[u8])) {
    // Every crate of this workspace sits two levels under the repository root.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            entry
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .path()
        })
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "{} has no seeds", dir.display());
    for path in paths {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("{}", path.display());
        run(&bytes);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn endpoint_parse_seeds() {
        super::replay_seeds("endpoint_parse", super::endpoint_parse);
    }
}
