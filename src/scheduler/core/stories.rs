//! The stories part: the recorded transitions of each key (`zask story KEY`), with times and
//! causes, across the scheduler's decisions and what workers report (finished, fetched inputs,
//! erred). Bounded in keys (`CoreConfig::story_keys_max`: the oldest story is forgotten when a
//! new key needs room) and in steps per key (`STORY_STEPS_MAX`: the oldest steps go first).
//!
//! Recorded compactly: a step is an enum of small ids and counts plus its time (24 bytes);
//! workers and clients are interned once in bounded tables and only named when a story is
//! read. A story starts when a graph defining the key is submitted (or a value is scattered
//! under it): a transition of a key with no story is not recorded, so a million-task graph
//! costs one story slot per key at most `story_keys_max` at a time, and a lookup per step.
//!
//! Stories are by key as clients write it; a key redefined by another graph is another task
//! (another wire key), told apart in the story by its definition number.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;

use super::tasks::{TaskState, TaskTable};
use super::violation::InvariantViolation;
use super::WorkerId;
use crate::graph::Key;
use crate::protocol::{
    ConnectionId, Reschedule, Story, StoryEvent, StoryStep, TaskErrorKind, WorkerAddress,
};

/// At most this many steps are kept per key; older ones are forgotten (counted). A task
/// passes through about six (submitted, waiting, ready, assigned, done, released, forgotten);
/// the rest is room for losses and reruns.
pub(super) const STORY_STEPS_MAX: usize = 32;

/// At most this many definitions of one key are told apart; steps of further ones are not
/// recorded.
const DEFINITIONS_MAX: usize = 8;

/// At most this many workers and clients are remembered by name for the stories (ids are
/// never reused, so an old one is only ever shown as unknown, never as another).
const WORKERS_MAX: usize = 4096;
const CLIENTS_MAX: usize = 1024;

/// What happened to a task, compactly (see `StoryEvent` for the meaning of each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StepKind {
    Submitted {
        client: u32,
    },
    Scattered {
        client: u32,
    },
    Waiting {
        inputs: u32,
    },
    Ready,
    Assigned {
        worker: WorkerId,
    },
    Finished {
        worker: WorkerId,
        took_ms: u32,
        fetched: u16,
    },
    Found {
        worker: WorkerId,
    },
    CopiedTo {
        worker: WorkerId,
    },
    Rescheduled {
        worker: WorkerId,
        why: Reschedule,
    },
    ResultLost {
        worker: WorkerId,
    },
    Erred {
        worker: WorkerId,
        kind: TaskErrorKind,
    },
    Failed,
    MarkedBad {
        workers: u32,
    },
    Released,
    Forgotten,
    Restarted,
}

#[derive(Clone, Copy, Debug)]
struct Step {
    at_ms: u64,
    definition: u8,
    what: StepKind,
}

struct StorySlot {
    key: Key,
    /// The wire keys of the definitions seen, in order.
    definitions: Vec<Key>,
    steps: Vec<Step>,
    /// Steps dropped from the front (the bound on steps).
    forgotten: u64,
}

pub(super) struct Stories {
    keys_max: usize,
    /// Story slot by key (as clients write it).
    index: HashMap<Key, u32>,
    slots: Vec<StorySlot>,
    /// The slot to reuse next once `slots` is full: the oldest story.
    next_evict: usize,
    workers: BTreeMap<WorkerId, WorkerAddress>,
    worker_ids: HashMap<WorkerAddress, WorkerId>,
    clients: HashMap<ConnectionId, u32>,
    client_names: BTreeMap<u32, ConnectionId>,
    next_client: u32,
}

/// A worker id for a worker the stories do not know (never used by the registry: ids count
/// up from 0 and never reach it).
pub(super) const UNKNOWN_WORKER: WorkerId = WorkerId(u32::MAX);

impl Stories {
    pub(super) fn new(keys_max: usize) -> Stories {
        Stories {
            keys_max,
            index: HashMap::default(),
            slots: Vec::new(),
            next_evict: 0,
            workers: BTreeMap::new(),
            worker_ids: HashMap::default(),
            clients: HashMap::default(),
            client_names: BTreeMap::new(),
            next_client: 0,
        }
    }

    /// A worker registered: its steps will be shown with this address.
    pub(super) fn worker_joined(&mut self, w: WorkerId, address: &WorkerAddress) {
        self.workers.insert(w, address.clone());
        self.worker_ids.insert(address.clone(), w);
        while self.workers.len() > WORKERS_MAX {
            if let Some((old, address)) = self.workers.pop_first() {
                if self.worker_ids.get(&address) == Some(&old) {
                    self.worker_ids.remove(&address);
                }
            }
        }
    }

    /// The (latest) worker registered at `address`, for steps that know only its address.
    pub(super) fn worker_at(&self, address: &WorkerAddress) -> WorkerId {
        self.worker_ids
            .get(address)
            .copied()
            .unwrap_or(UNKNOWN_WORKER)
    }

    fn client_id(&mut self, client: &ConnectionId) -> u32 {
        if let Some(c) = self.clients.get(client) {
            return *c;
        }
        let c = self.next_client;
        self.next_client = self.next_client.wrapping_add(1);
        self.clients.insert(client.clone(), c);
        self.client_names.insert(c, client.clone());
        while self.client_names.len() > CLIENTS_MAX {
            if let Some((_, old)) = self.client_names.pop_first() {
                self.clients.remove(&old);
            }
        }
        c
    }

    /// A graph defining `name` (as `wire`) was submitted by `client`: its story starts (or
    /// goes on).
    pub(super) fn submitted(&mut self, name: &Key, wire: &Key, client: &ConnectionId, at: u64) {
        let client = self.client_id(client);
        self.start(name, wire, at, StepKind::Submitted { client });
    }

    /// `client` scattered a value under `name` (as `wire`).
    pub(super) fn scattered(&mut self, name: &Key, wire: &Key, client: &ConnectionId, at: u64) {
        let client = self.client_id(client);
        self.start(name, wire, at, StepKind::Scattered { client });
    }

    /// Records a step, making room for a new story if `name` has none.
    fn start(&mut self, name: &Key, wire: &Key, at: u64, what: StepKind) {
        if self.keys_max == 0 {
            return;
        }
        let slot = match self.index.get(name) {
            Some(s) => *s as usize,
            None => self.new_slot(name),
        };
        Self::push(&mut self.slots[slot], wire, at, what, true);
    }

    fn new_slot(&mut self, name: &Key) -> usize {
        let fresh = StorySlot {
            key: name.clone(),
            definitions: Vec::new(),
            steps: Vec::new(),
            forgotten: 0,
        };
        let slot = if self.slots.len() < self.keys_max {
            self.slots.push(fresh);
            self.slots.len() - 1
        } else {
            // The oldest story goes; its slot (and its steps' room) is reused.
            let slot = self.next_evict;
            self.next_evict = (self.next_evict + 1) % self.keys_max;
            let old = &mut self.slots[slot];
            self.index.remove(&old.key);
            old.key = fresh.key;
            old.definitions.clear();
            old.steps.clear();
            old.forgotten = 0;
            slot
        };
        self.index.insert(name.clone(), slot as u32);
        slot
    }

    /// Records a step of the task `name` defines as `wire`, if the key has a story.
    pub(super) fn record(&mut self, name: &Key, wire: &Key, at: u64, what: StepKind) {
        if let Some(slot) = self.index.get(name) {
            Self::push(&mut self.slots[*slot as usize], wire, at, what, false);
        }
    }

    fn push(story: &mut StorySlot, wire: &Key, at: u64, what: StepKind, new_definition: bool) {
        let definition = match story.definitions.iter().position(|d| d == wire) {
            Some(d) => d,
            None if new_definition && story.definitions.len() < DEFINITIONS_MAX => {
                // Most keys have one definition: no room for more until one comes.
                story.definitions.reserve_exact(1);
                story.definitions.push(wire.clone());
                story.definitions.len() - 1
            }
            None => return,
        };
        if story.steps.len() >= STORY_STEPS_MAX {
            story.steps.remove(0);
            story.forgotten += 1;
        }
        story.steps.push(Step {
            at_ms: at,
            definition: definition as u8,
            what,
        });
    }

    /// The cluster restarted: every task was forgotten.
    pub(super) fn restarted(&mut self, at: u64) {
        for story in &mut self.slots {
            let definitions = story.definitions.clone();
            for wire in &definitions {
                Self::push(story, wire, at, StepKind::Restarted, false);
            }
        }
    }

    /// The story of `key`, as clients read it (no steps when there is none).
    pub(super) fn story(&self, key: &Key) -> Story {
        let Some(slot) = self.index.get(key) else {
            return Story::empty(key.clone());
        };
        let story = &self.slots[*slot as usize];
        Story {
            key: key.clone(),
            steps: story
                .steps
                .iter()
                .map(|s| StoryStep {
                    at_ms: s.at_ms,
                    definition: u32::from(s.definition),
                    what: self.event(s.what),
                })
                .collect(),
            forgotten: story.forgotten,
            definitions: story.definitions.len() as u32,
        }
    }

    fn address(&self, w: WorkerId) -> WorkerAddress {
        self.workers
            .get(&w)
            .cloned()
            .unwrap_or_else(|| WorkerAddress::from("(unknown worker)"))
    }

    fn client(&self, c: u32) -> String {
        self.client_names
            .get(&c)
            .map_or_else(|| "(unknown client)".into(), |c| c.to_string())
    }

    fn event(&self, step: StepKind) -> StoryEvent {
        match step {
            StepKind::Submitted { client } => StoryEvent::Submitted {
                client: self.client(client),
            },
            StepKind::Scattered { client } => StoryEvent::Scattered {
                client: self.client(client),
            },
            StepKind::Waiting { inputs } => StoryEvent::Waiting { inputs },
            StepKind::Ready => StoryEvent::Ready,
            StepKind::Assigned { worker } => StoryEvent::Assigned {
                worker: self.address(worker),
            },
            StepKind::Finished {
                worker,
                took_ms,
                fetched,
            } => StoryEvent::Finished {
                worker: self.address(worker),
                took_ms: u64::from(took_ms),
                fetched_inputs: u32::from(fetched),
            },
            StepKind::Found { worker } => StoryEvent::Found {
                worker: self.address(worker),
            },
            StepKind::CopiedTo { worker } => StoryEvent::CopiedTo {
                worker: self.address(worker),
            },
            StepKind::Rescheduled { worker, why } => StoryEvent::Rescheduled {
                worker: self.address(worker),
                why,
            },
            StepKind::ResultLost { worker } => StoryEvent::ResultLost {
                worker: self.address(worker),
            },
            StepKind::Erred { worker, kind } => StoryEvent::Erred {
                worker: self.address(worker),
                kind,
            },
            StepKind::Failed => StoryEvent::Failed,
            StepKind::MarkedBad { workers } => StoryEvent::MarkedBad {
                workers_killed: workers,
            },
            StepKind::Released => StoryEvent::Released,
            StepKind::Forgotten => StoryEvent::Forgotten,
            StepKind::Restarted => StoryEvent::Restarted,
        }
    }

    /// How many keys have a story (for tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// The part's invariants: within its bounds; every story a valid sequence of transitions
    /// (each definition's, from what is known of it); and the state a story ends in is the
    /// state of its task, for every task whose story says where it is.
    pub(super) fn check(&self, tasks: &TaskTable) -> Result<(), InvariantViolation> {
        let fail = |what: String| Err(InvariantViolation::new("stories", what));
        if self.index.len() > self.keys_max || self.slots.len() > self.keys_max {
            return fail(format!("{} stories", self.index.len()));
        }
        for (key, slot) in &self.index {
            let story = &self.slots[*slot as usize];
            if &story.key != key || story.steps.len() > STORY_STEPS_MAX {
                return fail(format!("story slot {slot} of {key:?} is not its own"));
            }
            let mut at = 0;
            for step in &story.steps {
                if step.at_ms < at {
                    return fail(format!("story of {key:?}: time goes back at {step:?}"));
                }
                at = step.at_ms;
            }
            for (d, wire) in story.definitions.iter().enumerate() {
                let steps = story
                    .steps
                    .iter()
                    .filter(|s| usize::from(s.definition) == d);
                let end = replay(steps.map(|s| s.what))
                    .map_err(|e| InvariantViolation::new("stories", format!("{key:?}: {e}")))?;
                let Some(t) = tasks.id(wire) else {
                    continue;
                };
                let state = tasks.get(t).state;
                if !end.agrees_with(state) {
                    return fail(format!(
                        "story of {key:?} (definition {d}) ends {end:?} but the task is {state:?}"
                    ));
                }
            }
        }
        Ok(())
    }
}

impl super::SchedulerCore {
    /// `client` submitted `graph` (resolved): the stories of its keys start (or go on). Only
    /// its last `story_keys_max` keys are recorded: the earlier ones would make room for the
    /// later ones at once, so a huge graph costs the submit no more than the bound.
    /// The (name, wire key) pairs of a submitted graph that get a story: its last
    /// `story_keys_max` keys.
    pub(super) fn story_keys(
        &self,
        graph: &[(Key, crate::graph::Expr)],
        resolved: &super::graphs::ResolvedGraph,
    ) -> Vec<(Key, Key)> {
        let skip = graph.len().saturating_sub(self.config.story_keys_max);
        graph[skip..]
            .iter()
            .filter_map(|(key, _)| Some((key.clone(), resolved.wire_key(key)?.clone())))
            .collect()
    }

    /// Starts the stories of a submitted graph's keys (`story_keys`).
    pub(super) fn stories_submitted(&mut self, keys: Vec<(Key, Key)>, client: &ConnectionId) {
        for (key, wire) in &keys {
            self.stories.submitted(key, wire, client, self.now_ms);
        }
    }

    /// Records a step of task `t` in its key's story (if the key has one), at the core's now.
    pub(super) fn story_step(&mut self, t: super::TaskId, what: StepKind) {
        let task = self.tasks.get(t);
        self.stories
            .record(task.name(), &task.key, self.now_ms, what);
    }
}

/// Where a story says its task is, as far as its steps tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Told {
    /// Nothing yet: every transition is possible.
    Unknown,
    Released,
    Waiting,
    Ready,
    Processing(WorkerId),
    /// Taken back: waiting or ready next.
    TakenBack,
    Memory,
    Erred,
}

impl Told {
    fn agrees_with(self, state: TaskState) -> bool {
        match (self, state) {
            (Told::Unknown, _) => true,
            (Told::Released, TaskState::Released)
            | (Told::Waiting, TaskState::Waiting)
            | (Told::Ready, TaskState::Ready)
            | (Told::Memory, TaskState::Memory)
            | (Told::Erred, TaskState::Erred) => true,
            (Told::Processing(w), TaskState::Processing(x)) => w == x,
            _ => false,
        }
    }
}

/// Replays a definition's steps: where they leave its task, or the first step that could not
/// follow the ones before.
pub(super) fn replay(steps: impl Iterator<Item = StepKind>) -> Result<Told, String> {
    let mut told = Told::Unknown;
    for step in steps {
        let from = told;
        let ok = |allowed: bool, to: Told| {
            if allowed || from == Told::Unknown {
                Ok(to)
            } else {
                Err(format!("{step:?} cannot follow {from:?}"))
            }
        };
        told = match step {
            StepKind::Submitted { .. } | StepKind::Scattered { .. } => from,
            StepKind::Waiting { .. } => ok(
                matches!(from, Told::Released | Told::TakenBack | Told::Ready),
                Told::Waiting,
            )?,
            StepKind::Ready => ok(
                matches!(from, Told::Released | Told::TakenBack | Told::Waiting),
                Told::Ready,
            )?,
            StepKind::Assigned { worker } => ok(from == Told::Ready, Told::Processing(worker))?,
            StepKind::Finished { worker, .. } => {
                ok(from == Told::Processing(worker), Told::Memory)?
            }
            StepKind::Found { .. } => Told::Memory,
            StepKind::CopiedTo { .. } => ok(from == Told::Memory, Told::Memory)?,
            StepKind::Rescheduled { worker, .. } => {
                ok(from == Told::Processing(worker), Told::TakenBack)?
            }
            StepKind::ResultLost { .. } => ok(from == Told::Memory, Told::Released)?,
            StepKind::Erred { worker, .. } => ok(from == Told::Processing(worker), Told::Erred)?,
            StepKind::Failed | StepKind::MarkedBad { .. } => ok(from != Told::Memory, Told::Erred)?,
            StepKind::Released | StepKind::Forgotten | StepKind::Restarted => Told::Released,
        };
    }
    Ok(told)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Key {
        Key::from(k)
    }

    #[test]
    fn the_oldest_story_goes_when_a_new_key_needs_room() {
        let mut stories = Stories::new(2);
        let client = ConnectionId::from("c");
        for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
            stories.submitted(&key(k), &Key::Int(i as i64), &client, i as u64);
        }
        assert_eq!(stories.len(), 2);
        assert!(stories.story(&key("a")).steps.is_empty(), "the oldest went");
        assert_eq!(stories.story(&key("c")).steps.len(), 1);
        // A step of a key with no story is not recorded (and makes no room).
        stories.record(&key("a"), &Key::Int(0), 5, StepKind::Ready);
        assert!(stories.story(&key("a")).steps.is_empty());
        assert_eq!(stories.story(&key("b")).steps.len(), 1);
    }

    #[test]
    fn a_long_story_forgets_its_oldest_steps() {
        let mut stories = Stories::new(4);
        let wire = Key::Int(7);
        stories.submitted(&key("k"), &wire, &ConnectionId::from("c"), 0);
        for i in 0..STORY_STEPS_MAX as u64 {
            stories.record(&key("k"), &wire, i, StepKind::Released);
        }
        let story = stories.story(&key("k"));
        assert_eq!(story.steps.len(), STORY_STEPS_MAX);
        assert_eq!(story.forgotten, 1);
        assert_eq!(story.steps[0].what, StoryEvent::Released);
    }

    #[test]
    fn a_step_is_small() {
        assert!(
            std::mem::size_of::<Step>() <= 24,
            "{}",
            std::mem::size_of::<Step>()
        );
    }

    #[test]
    fn replay_refuses_a_result_from_a_worker_the_task_was_not_given_to() {
        let (w1, w2) = (WorkerId(1), WorkerId(2));
        let steps = [
            StepKind::Waiting { inputs: 1 },
            StepKind::Ready,
            StepKind::Assigned { worker: w1 },
            StepKind::Finished {
                worker: w2,
                took_ms: 1,
                fetched: 0,
            },
        ];
        assert!(replay(steps.into_iter()).is_err());
        let rerun = [
            StepKind::Ready,
            StepKind::Assigned { worker: w1 },
            StepKind::Rescheduled {
                worker: w1,
                why: Reschedule::WorkerGone,
            },
            StepKind::Ready,
            StepKind::Assigned { worker: w2 },
            StepKind::Finished {
                worker: w2,
                took_ms: 1,
                fetched: 0,
            },
        ];
        assert_eq!(replay(rerun.into_iter()), Ok(Told::Memory));
    }
}
