//! The launcher's children: one `spotrun worker --serve` process per slot (a server, [`super::server`], seen from
//! the launcher), fed one job at a time on its stdin (`index I LOG`, `group G LOG` or `part G K N LOG`) and
//! answering `end CODE` on its stdout when the job ends, so the data and libtorch stay loaded from one run to the
//! next. A job's output goes to its own LOG, as a process per run would write it. Owns the processes and pipes
//! only; what an end means is [`super::exits`]'s.
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Instant;

/// What one slot's child is training.
#[derive(Debug, Clone)]
pub(super) struct Job {
    /// Indices into the sweep's runs (one, or a fused group's).
    pub runs: Vec<usize>,
    pub started: Instant,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

/// How a job ended: the exit code its child reported (or exited with), or the signal that killed the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct JobEnd {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl std::fmt::Display for JobEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit status: {c}"),
            (None, Some(s)) => write!(f, "signal: {s} ({})", crate::trainer::signal_name(s)),
            (None, None) => f.write_str("an unknown end"),
        }
    }
}

/// A child: the `spotrun worker --serve` process of one slot.
pub(super) struct SlotChild {
    child: Child,
    stdin: Option<ChildStdin>,
    ends: Receiver<i32>,
    reader: Option<JoinHandle<()>>,
    /// The job in flight, if any.
    pub job: Option<Job>,
}

impl SlotChild {
    /// Starts `cmd` (a `spotrun worker --serve` command with its environment set) with piped stdin and stdout;
    /// `wake` gets a message whenever a job of it ends.
    pub(super) fn spawn(mut cmd: Command, wake: Sender<()>) -> std::io::Result<SlotChild> {
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let (tx, ends) = mpsc::channel();
        let reader = stdout.map(|out| {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Some(code) = line.strip_prefix("end ").and_then(|c| c.trim().parse::<i32>().ok()) {
                        let _ = tx.send(code);
                        let _ = wake.send(());
                    }
                }
            })
        });
        Ok(SlotChild { child, stdin, ends, reader, job: None })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Hands `job` over: `what` is `index I`, `group G` or `part G K N`.
    pub(super) fn start(&mut self, what: &str, job: Job) -> std::io::Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| std::io::Error::other("the worker's stdin is closed"))?;
        writeln!(stdin, "{what} {}", job.log.display())?;
        stdin.flush()?;
        self.job = Some(job);
        Ok(())
    }

    /// The end of the job in flight, when it ended since the last poll, and whether the process has exited (a
    /// job in flight when it died ends with its exit status).
    pub(super) fn poll(&mut self) -> (Option<(Job, JobEnd)>, bool) {
        if let Ok(code) = self.ends.try_recv() {
            return (self.job.take().map(|j| (j, JobEnd { code: Some(code), signal: None })), false);
        }
        let status = match self.child.try_wait() {
            Ok(Some(s)) => s,
            _ => return (None, false),
        };
        // Its last words may still be in the pipe: the reader ends at EOF.
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let end = match self.ends.try_recv() {
            Ok(code) => JobEnd { code: Some(code), signal: None },
            Err(_) => {
                use std::os::unix::process::ExitStatusExt;
                JobEnd { code: status.code(), signal: status.signal() }
            }
        };
        (self.job.take().map(|j| (j, end)), true)
    }

    /// Closes its stdin (an idle child exits at once) and waits for the process.
    pub(super) fn close(mut self) {
        self.stdin = None;
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}
