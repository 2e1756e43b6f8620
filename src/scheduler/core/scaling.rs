//! The scaling part: the size an operator last asked a running cluster for (`zask scale`,
//! `zask adapt`). The scheduler does not start or stop workers (a cluster manager does): it
//! keeps the request, numbered, for the manager to read (`GetScaling`) and apply once.

use super::violation::InvariantViolation;
use crate::protocol::{RequestError, ScalingRequest, WantedScaling};

#[derive(Default)]
pub(super) struct Scaling {
    /// The last request recorded.
    wanted: Option<WantedScaling>,
    /// The serial of the last request (0: none yet).
    serial: u64,
}

impl Scaling {
    /// Records `request` under the next serial, or refuses bounds that cannot hold.
    pub(super) fn set(&mut self, request: ScalingRequest) -> Result<u64, RequestError> {
        if let ScalingRequest::Adapt {
            minimum,
            maximum,
            target_duration_ms,
        } = &request
        {
            if maximum < minimum || *maximum == 0 {
                return Err(RequestError::Protocol {
                    message: format!(
                        "adapt between {minimum} and {maximum} workers: the maximum must be at \
                         least the minimum and at least 1"
                    ),
                });
            }
            if *target_duration_ms == Some(0) {
                return Err(RequestError::Protocol {
                    message: "adapt with a target duration of 0 ms".into(),
                });
            }
        }
        self.serial += 1;
        self.wanted = Some(WantedScaling {
            serial: self.serial,
            request,
        });
        Ok(self.serial)
    }

    pub(super) fn wanted(&self) -> Option<&WantedScaling> {
        self.wanted.as_ref()
    }

    /// The part's invariant: the recorded request carries the last serial given.
    pub(super) fn check(&self) -> Result<(), InvariantViolation> {
        let broken = |message| Err(InvariantViolation::new("scaling", message));
        match &self.wanted {
            Some(w) if w.serial != self.serial => broken(format!(
                "the scaling request has serial {} but the last given is {}",
                w.serial, self.serial
            )),
            None if self.serial != 0 => broken(format!(
                "serial {} given but no scaling request kept",
                self.serial
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_request_gets_the_next_serial_and_replaces_the_last() {
        let mut s = Scaling::default();
        assert_eq!(s.wanted(), None);
        assert_eq!(s.set(ScalingRequest::Scale { workers: 3 }), Ok(1));
        let adapt = ScalingRequest::Adapt {
            minimum: 1,
            maximum: 2,
            target_duration_ms: None,
        };
        assert_eq!(s.set(adapt.clone()), Ok(2));
        assert_eq!(
            s.wanted(),
            Some(&WantedScaling {
                serial: 2,
                request: adapt
            })
        );
        assert_eq!(s.check(), Ok(()));
    }

    #[test]
    fn bounds_that_cannot_hold_are_refused_and_change_nothing() {
        let mut s = Scaling::default();
        for bad in [(2, 1), (0, 0)] {
            let r = s.set(ScalingRequest::Adapt {
                minimum: bad.0,
                maximum: bad.1,
                target_duration_ms: None,
            });
            assert!(matches!(r, Err(RequestError::Protocol { .. })), "{r:?}");
        }
        assert_eq!(s.wanted(), None);
        assert_eq!(s.check(), Ok(()));
    }
}
