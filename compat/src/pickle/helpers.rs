//! Builders and readers for the opaque values the legacy protocol carries in headers and
//! replies (legacy-protocol.md §2, §7.3).

use super::value::{Node, NodeId, Pickle};

/// A naive `datetime.datetime`, as the legacy headers' `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub microsecond: u32,
}

impl DateTime {
    /// The 10-byte state `datetime.__reduce__` gives: year (u16 BE), month, day, hour, minute,
    /// second, microsecond (u24 BE).
    pub fn to_state(&self) -> [u8; 10] {
        let y = self.year.to_be_bytes();
        let us = self.microsecond.to_be_bytes();
        [
            y[0],
            y[1],
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            us[1],
            us[2],
            us[3],
        ]
    }

    /// The inverse of [`DateTime::to_state`]; `None` unless exactly 10 bytes.
    pub fn from_state(b: &[u8]) -> Option<DateTime> {
        let b: &[u8; 10] = b.try_into().ok()?;
        Some(DateTime {
            year: u16::from_be_bytes([b[0], b[1]]),
            month: b[2],
            day: b[3],
            hour: b[4],
            minute: b[5],
            second: b[6],
            microsecond: u32::from_be_bytes([0, b[7], b[8], b[9]]),
        })
    }
}

impl Pickle {
    /// Adds `Global(module, name)`.
    pub fn add_global(&mut self, module: &str, name: &str) -> NodeId {
        self.add(Node::Global {
            module: module.to_owned(),
            name: name.to_owned(),
        })
    }

    /// Adds `datetime.datetime(...)` as CPython pickles it: `REDUCE(datetime.datetime, (state,))`.
    pub fn add_datetime(&mut self, dt: &DateTime) -> NodeId {
        let callable = self.add_global("datetime", "datetime");
        let state = self.add(Node::Bytes(dt.to_state().to_vec()));
        let args = self.add(Node::Tuple(vec![state]));
        self.add(Node::Reduce { callable, args })
    }

    /// Reads a node built like [`Pickle::add_datetime`] (a timezone argument is ignored).
    pub fn datetime_of(&self, id: NodeId) -> Option<DateTime> {
        let Node::Reduce { callable, args } = self.get(id)? else {
            return None;
        };
        match self.get(*callable)? {
            Node::Global { module, name } if module == "datetime" && name == "datetime" => {}
            _ => return None,
        }
        match self.get(*self.tuple_of(*args)?.first()?)? {
            Node::Bytes(b) => DateTime::from_state(b),
            _ => None,
        }
    }

    /// Adds an exception instance `module.name(message)`, e.g. `builtins.KeyError('x')`: what
    /// the legacy client raises when a reply's status is not `'OK'`.
    pub fn add_exception(&mut self, module: &str, name: &str, message: &str) -> NodeId {
        let callable = self.add_global(module, name);
        let msg = self.add(Node::Str(message.to_owned()));
        let args = self.add(Node::Tuple(vec![msg]));
        self.add(Node::Reduce { callable, args })
    }

    /// Adds `Global('dill', 'loads')`, the header `loads` field that makes a legacy receiver
    /// decode a payload with dill (it resolves whatever dill's internal module is called).
    pub fn add_dill_loads(&mut self) -> NodeId {
        self.add_global("dill", "loads")
    }

    /// Adds `dill.loads(blob)`: embeds an already standalone pickle in a bigger one; plain
    /// `pickle.loads` of the outer pickle yields the inner object.
    pub fn add_embedded_pickle(&mut self, blob: Vec<u8>) -> NodeId {
        let callable = self.add_dill_loads();
        let b = self.add(Node::Bytes(blob));
        let args = self.add(Node::Tuple(vec![b]));
        self.add(Node::Reduce { callable, args })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_state_matches_the_captured_timestamp() {
        // legacy-protocol.md §2: 07ea 0b 19 0f 06 18 06f0de = 2026-11-25 15:06:24.454878
        let b = [0x07, 0xea, 0x0b, 0x19, 0x0f, 0x06, 0x18, 0x06, 0xf0, 0xde];
        let dt = DateTime::from_state(&b).unwrap();
        assert_eq!(
            dt,
            DateTime {
                year: 2026,
                month: 11,
                day: 25,
                hour: 15,
                minute: 6,
                second: 24,
                microsecond: 454878
            }
        );
        assert_eq!(dt.to_state(), b);
        let mut p = Pickle::new();
        let id = p.add_datetime(&dt);
        assert_eq!(p.datetime_of(id), Some(dt));
    }
}
