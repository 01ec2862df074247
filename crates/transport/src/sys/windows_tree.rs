//! Windows: a child's process tree is a Job object with
//! `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE` that the child joins just after it is created
//! (std cannot start a process inside a job), so a process it starts in that first
//! instant escapes; everything started later joins. The job kills them all when its
//! last handle closes: when the `Tree` is dropped, and when this process exits or is
//! killed, however hard (the system closes its handles).
#![allow(unsafe_code)]

use std::io;
use std::os::windows::io::{AsRawHandle as _, FromRawHandle as _, OwnedHandle};
use std::ptr;

use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JobObjectBasicAccountingInformation,
    JobObjectExtendedLimitInformation, QueryInformationJobObject, SetInformationJobObject,
    TerminateJobObject, JOBOBJECT_BASIC_ACCOUNTING_INFORMATION,
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
};

/// The exit code of processes the job kills.
const KILLED: u32 = 1;

/// A child's process tree: a Job object with `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE` holding
/// the child and whatever it starts. Dropping it kills them all.
#[derive(Debug)]
pub(crate) struct Tree {
    job: OwnedHandle,
}

impl Tree {
    /// A new job holding `child`.
    ///
    /// # Errors
    ///
    /// The job cannot be created or configured, or `child` cannot join it (it has exited,
    /// or runs in a job that forbids nested jobs: Windows 7 and older).
    pub(crate) fn new(child: &tokio::process::Child) -> io::Result<Tree> {
        let process = child
            .raw_handle()
            .ok_or_else(|| io::Error::other("the child has already exited"))?;
        // SAFETY: no attributes, no name; the result is a new handle or null.
        let job = unsafe { CreateJobObjectW(ptr::null(), ptr::null()) };
        if job.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `job` is a valid handle that nothing else owns.
        let job = unsafe { OwnedHandle::from_raw_handle(job) };
        let mut limits = JOBOBJECT_EXTENDED_LIMIT_INFORMATION::default();
        limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
        // SAFETY: a live job handle; a pointer to, and the size of, the structure this
        // information class takes.
        let set = unsafe {
            SetInformationJobObject(
                job.as_raw_handle() as HANDLE,
                JobObjectExtendedLimitInformation,
                ptr::from_ref(&limits).cast(),
                size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
            )
        };
        if set == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a live job handle and a live process handle (the child is not reaped
        // while `child` is borrowed).
        let assigned =
            unsafe { AssignProcessToJobObject(job.as_raw_handle() as HANDLE, process as HANDLE) };
        if assigned == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Tree { job })
    }

    /// Kills every process left in the job (the job stays, empty, until dropped).
    pub(crate) fn kill(&self) {
        // SAFETY: a live job handle.
        let _ = unsafe { TerminateJobObject(self.job.as_raw_handle() as HANDLE, KILLED) };
    }

    /// Whether no process is left in the job.
    pub(crate) fn is_empty(&self) -> bool {
        let mut info = JOBOBJECT_BASIC_ACCOUNTING_INFORMATION::default();
        // SAFETY: a live job handle; a pointer to, and the size of, the structure this
        // information class fills in.
        let ok = unsafe {
            QueryInformationJobObject(
                self.job.as_raw_handle() as HANDLE,
                JobObjectBasicAccountingInformation,
                ptr::from_mut(&mut info).cast(),
                size_of::<JOBOBJECT_BASIC_ACCOUNTING_INFORMATION>() as u32,
                ptr::null_mut(),
            )
        };
        // A job that cannot be asked is taken as empty: nothing is waited for.
        ok == 0 || info.ActiveProcesses == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::{Duration, Instant};

    use windows_sys::Win32::Foundation::{CloseHandle, STILL_ACTIVE};
    use windows_sys::Win32::System::JobObjects::{
        IsProcessInJob, JobObjectBasicProcessIdList, QueryInformationJobObject,
    };
    use windows_sys::Win32::System::Threading::{
        GetExitCodeProcess, OpenProcess, QueryFullProcessImageNameW,
        PROCESS_QUERY_LIMITED_INFORMATION,
    };

    use super::*;

    /// The ids of the processes in `tree`'s job.
    fn members(tree: &Tree) -> Vec<u32> {
        // JOBOBJECT_BASIC_PROCESS_ID_LIST: two u32 counts, then that many ULONG_PTR ids.
        let mut buf = [0usize; 64];
        // SAFETY: a live job handle and a buffer of the size given.
        let ok = unsafe {
            QueryInformationJobObject(
                tree.job.as_raw_handle() as HANDLE,
                JobObjectBasicProcessIdList,
                buf.as_mut_ptr().cast(),
                size_of_val(&buf) as u32,
                ptr::null_mut(),
            )
        };
        assert_ne!(ok, 0, "{}", io::Error::last_os_error());
        let listed = buf[0] >> 32;
        buf[1..=listed].iter().map(|&pid| pid as u32).collect()
    }

    /// Whether process `pid` still runs.
    fn running(pid: u32) -> bool {
        // SAFETY: plain calls; the handle is closed below.
        unsafe {
            let process = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
            if process.is_null() {
                return false;
            }
            let mut code = 0u32;
            let ok = GetExitCodeProcess(process, &mut code);
            CloseHandle(process);
            ok != 0 && code == STILL_ACTIVE as u32
        }
    }

    /// Whether process `pid` runs the program `image` (a file name, any case).
    fn runs(pid: u32, image: &str) -> bool {
        let mut name = [0u16; 1024];
        let mut len = name.len() as u32;
        // SAFETY: plain calls; a buffer of the size given; the handle is closed below.
        let ok = unsafe {
            let process = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
            if process.is_null() {
                return false;
            }
            let ok = QueryFullProcessImageNameW(process, 0, name.as_mut_ptr(), &mut len);
            CloseHandle(process);
            ok
        };
        ok != 0
            && String::from_utf16_lossy(&name[..len as usize])
                .to_ascii_lowercase()
                .ends_with(image)
    }

    /// Until `ping` itself is in the job: a count of members could be `cmd` and a console
    /// host, and a `ping` started after the kill would outlive it (and fail the test).
    async fn until_ping_runs_in(tree: &Tree) {
        until("ping to start in the job", || {
            members(tree).iter().any(|&pid| runs(pid, "ping.exe"))
        })
        .await;
    }

    /// `cmd` running `ping` for a minute: a program with a child of its own.
    fn spawn_tree() -> tokio::process::Child {
        let mut cmd = tokio::process::Command::new("cmd.exe");
        cmd.args(["/c", "ping -n 60 127.0.0.1 >NUL"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd.creation_flags(0x0800_0000); // CREATE_NO_WINDOW
        cmd.spawn().expect("start cmd.exe")
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn the_helper_and_what_it_starts_die_with_the_job() {
        let child = spawn_tree();
        let tree = Tree::new(&child).expect("the job");
        let mut in_job = 0;
        // SAFETY: live handles and an out parameter.
        let ok = unsafe {
            IsProcessInJob(
                child.raw_handle().unwrap() as HANDLE,
                tree.job.as_raw_handle() as HANDLE,
                &mut in_job,
            )
        };
        assert_ne!(ok, 0, "{}", io::Error::last_os_error());
        assert_ne!(in_job, 0, "the helper is in the job");
        // cmd starts ping: it joins the job too.
        until_ping_runs_in(&tree).await;
        let pids = members(&tree);
        assert!(pids.contains(&child.id().unwrap()), "{pids:?}");
        drop(tree);
        until("the whole tree to die with the job", || {
            pids.iter().all(|&pid| !running(pid))
        })
        .await;
    }

    #[tokio::test]
    async fn kill_empties_the_job() {
        let mut child = spawn_tree();
        let tree = Tree::new(&child).expect("the job");
        until_ping_runs_in(&tree).await;
        let pids = members(&tree);
        tree.kill();
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("the helper to exit")
            .unwrap();
        assert_eq!(status.code(), Some(KILLED as i32));
        until("the job to empty", || members(&tree).is_empty()).await;
        assert!(pids.iter().all(|&pid| !running(pid)), "{pids:?}");
    }
}
