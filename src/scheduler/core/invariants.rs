//! The core's invariants, checked by tests and the simulator after every step: each part's
//! own (`check` on the part) and those that tie parts together (a holder lists what it holds,
//! every pin is a name or a dataset, a task processing on a worker is listed there).

use rustc_hash::FxHashMap as HashMap;

use super::tasks::TaskState;
use super::violation::InvariantViolation;
use super::{SchedulerCore, TaskId};

pub(super) fn check(core: &SchedulerCore) -> Result<(), InvariantViolation> {
    let tasks = &core.tasks;
    let exists = |t: TaskId| tasks.exists(t);
    tasks.check()?;
    core.workers.check()?;
    core.membership.check()?;
    core.flaky.check()?;
    core.computations.check(&exists)?;
    core.progress.check()?;
    core.replication.check(&exists)?;
    core.placement.check(&exists)?;
    core.scaling.check()?;
    core.events.check()?;
    core.stories.check(tasks)?;
    holders(core)?;
    pins(core)?;
    Ok(())
}

/// Every holder of a task is a live worker listing it; a task in memory has a holder and no
/// other task has one; a task processing on a worker is listed there, and the other way round.
fn holders(core: &SchedulerCore) -> Result<(), InvariantViolation> {
    for (id, t) in core.tasks.iter() {
        for w in &t.who_has {
            match core.workers.get(*w) {
                None => {
                    return Err(InvariantViolation::new(
                        "holders",
                        format!("task {:?} held by a removed worker", t.key),
                    ))
                }
                Some(worker) if !worker.has.contains(&id) => {
                    return Err(InvariantViolation::new(
                        "holders",
                        format!("task {:?}: holder does not list it", t.key),
                    ))
                }
                _ => {}
            }
        }
        match t.state {
            TaskState::Memory if t.who_has.is_empty() => {
                return Err(InvariantViolation::new(
                    "holders",
                    format!("task {:?} in memory with no holder", t.key),
                ))
            }
            TaskState::Memory => {}
            _ if !t.who_has.is_empty() => {
                return Err(InvariantViolation::new(
                    "holders",
                    format!("task {:?} is {:?} but has holders", t.key, t.state),
                ))
            }
            TaskState::Processing(w) => match core.workers.get(w) {
                Some(worker) if worker.processing.contains_key(&id) => {}
                _ => {
                    return Err(InvariantViolation::new(
                        "holders",
                        format!("task {:?} processing on an unknown worker", t.key),
                    ))
                }
            },
            _ => {}
        }
    }
    for (wid, w) in core.workers.iter() {
        for t in w.processing.keys() {
            if !core.tasks.exists(*t) || core.tasks.get(*t).state != TaskState::Processing(wid) {
                return Err(InvariantViolation::new(
                    "holders",
                    format!("worker {} lists a task not processing there", w.address),
                ));
            }
        }
        for t in &w.has {
            if !core.tasks.exists(*t) {
                return Err(InvariantViolation::new(
                    "holders",
                    format!("worker {} lists a forgotten task", w.address),
                ));
            }
        }
    }
    Ok(())
}

/// Each task's pins are the names and datasets that hold it, all of live tasks.
fn pins(core: &SchedulerCore) -> Result<(), InvariantViolation> {
    let mut pins: HashMap<TaskId, u32> = HashMap::default();
    for (key, t) in core.names.iter() {
        if !core.tasks.exists(t) {
            return Err(InvariantViolation::new(
                "pins",
                format!("{key:?} names a forgotten task"),
            ));
        }
        if core.tasks.get(t).name() != key {
            return Err(InvariantViolation::new(
                "pins",
                format!("{key:?} names a task of another key"),
            ));
        }
        *pins.entry(t).or_default() += 1;
    }
    for (name, t) in core.collections.dataset_tasks() {
        if !core.tasks.exists(t) {
            return Err(InvariantViolation::new(
                "pins",
                format!("dataset {name:?} holds a forgotten task"),
            ));
        }
        *pins.entry(t).or_default() += 1;
    }
    for (id, t) in core.tasks.iter() {
        let expected = pins.get(&id).copied().unwrap_or(0);
        if t.pins != expected {
            return Err(InvariantViolation::new(
                "pins",
                format!(
                    "task {:?}: {} pins but {expected} names and datasets hold it",
                    t.key, t.pins
                ),
            ));
        }
    }
    Ok(())
}
