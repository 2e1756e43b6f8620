//! The outbox: commands for the IO layer (messages to clients, direct messages to worker
//! connections, journal operations), in the order they were decided, and the numbering of
//! requests the scheduler sends to workers. Messages to a registered worker wait in that
//! worker's own queue (`workers.rs`) so consecutive ones can be merged.

use super::{Command, JournalOp};
use crate::protocol::{ConnectionId, ToClient, ToWorker};

pub(super) struct Outbox {
    commands: Vec<Command>,
    /// Describe durable state changes as `Command::Journal` (the scheduler has a state dir).
    journal: bool,
    /// The next id of a request to a worker (value fetches and puts share one numbering).
    next_request: u64,
    /// Journal operations handed to the IO layer so far (`/metrics`).
    journal_writes: u64,
}

impl Outbox {
    pub(super) fn new(journal: bool) -> Outbox {
        Outbox {
            commands: Vec::new(),
            journal,
            next_request: 1,
            journal_writes: 0,
        }
    }

    pub(super) fn push(&mut self, command: Command) {
        self.commands.push(command);
    }

    pub(super) fn reply(&mut self, identity: &ConnectionId, msg: ToClient) {
        self.commands.push(Command::ToClient {
            identity: identity.clone(),
            msg,
            frames: vec![],
        });
    }

    /// A message to a connection on the worker port, straight to the commands (a worker that
    /// is not registered, or no longer: its own queue is gone).
    pub(super) fn send_to_connection(&mut self, identity: ConnectionId, msg: ToWorker) {
        self.commands.push(Command::ToWorker {
            identity,
            msg,
            frames: vec![],
        });
    }

    /// Records a durable change, when the scheduler keeps a journal.
    pub(super) fn journal(&mut self, op: JournalOp) {
        if self.journal {
            self.journal_writes += 1;
            self.commands.push(Command::Journal(op));
        }
    }

    pub(super) fn journal_writes(&self) -> u64 {
        self.journal_writes
    }

    pub(super) fn journaling(&self) -> bool {
        self.journal
    }

    pub(super) fn next_request_id(&mut self) -> u64 {
        let r = self.next_request;
        self.next_request += 1;
        r
    }

    pub(super) fn take(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }
}
