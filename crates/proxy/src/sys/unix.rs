//! Unix: the process's open file descriptors, listed in `/proc/self/fd` (Linux) or
//! `/dev/fd` (macOS and the BSDs).

/// How many file descriptors this process has open, or `None` where neither listing
/// exists.
pub(crate) fn open_descriptors() -> Option<u64> {
    ["/proc/self/fd", "/dev/fd"].iter().find_map(|dir| {
        let entries = std::fs::read_dir(dir).ok()?;
        // The listing is read through a descriptor of its own; it is not the process's.
        Some((entries.count() as u64).saturating_sub(1))
    })
}
