//! Group commit: every runner's journal writes go to one writer thread that
//! commits whatever is queued in a single durable transaction and then
//! answers each writer. Many nodes' fsyncs become one.
//!
//! In a cluster, a batch is first written to the cluster's copy (a
//! [`Mirror`]) in one guarded request; the requests of nodes this daemon no
//! longer owns are refused there and never reach the state file.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::store::{Store, Write};

struct Request {
    writes: Vec<Write>,
    done: oneshot::Sender<Result<Vec<u64>, String>>,
}

/// A second copy of the journals and records, written before the state
/// file: the cluster's, which another daemon resumes a node from.
pub trait Mirror: Send + Sync {
    /// Write what of `writes` the copy keeps, guarded by this daemon's
    /// ownership of each node; returns the nodes whose writes it refused
    /// (ownership lost). An error refuses the whole batch.
    fn mirror(&self, writes: &[&Write]) -> Result<HashSet<String>, String>;
}

/// The node a write is about, if any.
pub fn node_of(write: &Write) -> Option<&str> {
    match write {
        Write::Node(name, _)
        | Write::Journal(name, _)
        | Write::ClearJournal(name)
        | Write::Drift(name, _)
        | Write::ClearDrift(name)
        | Write::Agent(name, _)
        | Write::ClearAgent(name) => Some(name),
        Write::Event(event) => Some(&event.node),
        Write::Run(..) | Write::Declarations(_) => None,
    }
}

/// A handle to the writer; clone it freely.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Request>,
    store: Arc<Store>,
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("could not record progress in the state file: {0}")]
pub struct JournalError(pub String);

impl JournalError {
    /// Refused by the cluster's copy: this daemon may no longer work on the
    /// node, which is not the node's failure.
    pub fn is_fenced(&self) -> bool {
        self.0.starts_with(FENCED)
    }
}

const FENCED: &str = "fenced: ";

/// Write a batch to the mirror; answer the requests it refused and return
/// the others.
fn mirrored(mirror: &dyn Mirror, batch: Vec<Request>) -> Vec<Request> {
    let all: Vec<&Write> = batch.iter().flat_map(|r| r.writes.iter()).collect();
    let refused = match mirror.mirror(&all) {
        Ok(refused) => refused,
        Err(e) => {
            for request in batch {
                let _ = request.done.send(Err(format!("{FENCED}{e}")));
            }
            return Vec::new();
        }
    };
    if refused.is_empty() {
        return batch;
    }
    let mut kept = Vec::with_capacity(batch.len());
    for request in batch {
        let lost = request
            .writes
            .iter()
            .filter_map(node_of)
            .find(|n| refused.contains(*n))
            .map(str::to_string);
        match lost {
            Some(node) => {
                let _ = request.done.send(Err(format!(
                    "{FENCED}this conductor no longer owns `{node}`; its new owner goes on"
                )));
            }
            None => kept.push(request),
        }
    }
    kept
}

impl Journal {
    /// Start the writer thread; it ends when the last handle is dropped.
    pub fn start(store: Arc<Store>) -> Self {
        Self::start_mirrored(store, None)
    }

    /// Start the writer with a mirror written before the state file.
    pub fn start_mirrored(store: Arc<Store>, mirror: Option<Arc<dyn Mirror>>) -> Self {
        let (tx, rx) = mpsc::channel::<Request>();
        let writer = Arc::clone(&store);
        let thread = std::thread::Builder::new()
            .name("rivet-journal".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                    if let Some(mirror) = &mirror {
                        batch = mirrored(mirror.as_ref(), batch);
                        if batch.is_empty() {
                            continue;
                        }
                    }
                    // The writes are moved into one batch, not copied: a
                    // journal write carries a node's operations and record.
                    let mut all = Vec::with_capacity(batch.iter().map(|r| r.writes.len()).sum());
                    let mut answers = Vec::with_capacity(batch.len());
                    for request in batch {
                        let events = request
                            .writes
                            .iter()
                            .filter(|w| matches!(w, Write::Event(_)))
                            .count();
                        all.extend(request.writes);
                        answers.push((events, request.done));
                    }
                    match writer.apply(&all) {
                        Ok(seqs) => {
                            let mut seqs = seqs.into_iter();
                            for (events, done) in answers {
                                let mine: Vec<u64> = seqs.by_ref().take(events).collect();
                                let _ = done.send(Ok(mine));
                            }
                        }
                        Err(e) => {
                            for (_, done) in answers {
                                let _ = done.send(Err(e.to_string()));
                            }
                        }
                    }
                }
            })
            .expect("the journal thread starts");
        Self {
            tx,
            store,
            thread: Arc::new(std::sync::Mutex::new(Some(thread))),
        }
    }

    /// Stop the writer once every other handle is gone, and wait for it, so
    /// the state file is closed cleanly. Call with the last handle.
    pub fn close(self) {
        let thread = Arc::clone(&self.thread);
        drop(self);
        if let Some(handle) = thread.lock().expect("journal thread handle").take() {
            let _ = handle.join();
        }
    }

    /// Commit `writes` durably; returns the sequence numbers of their events.
    pub async fn commit(&self, writes: Vec<Write>) -> Result<Vec<u64>, JournalError> {
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Request { writes, done })
            .map_err(|_| JournalError("the journal writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| JournalError("the journal writer has stopped".into()))?
            .map_err(JournalError)
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }
}
