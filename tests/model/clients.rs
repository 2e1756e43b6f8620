//! Model clients: the requests they send (through the real message types), what they do
//! with answers (a fetched collection may be computed at once) and how they leave.

use std::collections::{BTreeMap, BTreeSet};

use zask::collection::Collection;
use zask::protocol::codec::{encode, encode_value};
use zask::protocol::{
    ConnectionId, Frame, FromClient, RequestError, RequestId, ToClient, PROTOCOL_VERSION,
};
use zask::Value;

use crate::answers::values_in_order;
use crate::workload::{self, random_op, ClientOp};
use crate::{Endpoint, Link, Model, Packet, CLIENT_PING_MS, R};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientLife {
    Active,
    /// Said goodbye: nothing more is expected for it.
    Left,
    /// Stopped pinging: the scheduler drops it after `client_timeout_ms`.
    Silent,
}

pub(crate) struct ModelClient {
    pub(crate) identity: ConnectionId,
    pub(crate) life: ClientLife,
    pub(crate) next_request: u64,
    pub(crate) next_ping_ms: u64,
    /// Sent, not answered, not cancelled: what liveness waits for.
    pub(crate) waiting: BTreeSet<u64>,
    pub(crate) last_persisted: Option<Collection>,
    /// Submit a fetched collection's graph on receipt (always in scenarios).
    pub(crate) compute_fetched: bool,
    /// Values received, by request (kept for the named scenarios).
    pub(crate) values: BTreeMap<u64, Vec<Value>>,
    pub(crate) errors: BTreeMap<u64, RequestError>,
}

impl Model {
    pub(crate) fn add_client(&mut self) -> usize {
        let idx = self.clients.len();
        let identity = ConnectionId::from(format!("c{idx}"));
        self.endpoints
            .insert(identity.clone(), Endpoint::Client(idx));
        self.clients.push(ModelClient {
            identity,
            life: ClientLife::Active,
            next_request: 1,
            next_ping_ms: self.now + CLIENT_PING_MS,
            waiting: BTreeSet::new(),
            last_persisted: None,
            compute_fetched: false,
            values: BTreeMap::new(),
            errors: BTreeMap::new(),
        });
        self.client_send_raw(
            idx,
            &FromClient::Hello {
                protocol_version: PROTOCOL_VERSION,
            },
            vec![],
        );
        idx
    }

    pub(crate) fn client_send_raw(&mut self, c: usize, msg: &FromClient, frames: Vec<Frame>) {
        let link = Link::Up(self.clients[c].identity.clone());
        self.push(link, Packet::Msg(encode(msg), frames));
    }

    /// A client sends `op` (returns its request id, if it sent a request).
    pub(crate) fn client_send(&mut self, c: usize, op: ClientOp) -> Option<u64> {
        let id = self.clients[c].next_request;
        let request = RequestId(id);
        let (msg, frames) = match &op {
            ClientOp::Submit {
                graph,
                outputs,
                keep,
            } => (
                FromClient::Submit {
                    request,
                    graph: graph.clone(),
                    outputs: outputs.clone(),
                    keep_results: *keep,
                    restrictions: vec![],
                },
                vec![],
            ),
            ClientOp::Persist { graph, outputs } => {
                self.clients[c].last_persisted = Some(workload::collection(
                    "persisted",
                    graph.clone(),
                    outputs.clone(),
                ));
                (
                    FromClient::Persist {
                        request,
                        graph: graph.clone(),
                        outputs: outputs.clone(),
                    },
                    vec![],
                )
            }
            ClientOp::Scatter { keys, values } => (
                FromClient::Scatter {
                    request,
                    keys: keys.clone(),
                },
                values
                    .iter()
                    .map(|v| encode_value(&Value::Int(*v)))
                    .collect(),
            ),
            ClientOp::Gather(keys) => (
                FromClient::Gather {
                    request,
                    keys: keys.clone(),
                },
                vec![],
            ),
            ClientOp::Release(keys) => (
                FromClient::Release {
                    request,
                    keys: keys.clone(),
                },
                vec![],
            ),
            ClientOp::WhoHas(keys) => (
                FromClient::WhoHas {
                    request,
                    keys: keys.clone(),
                },
                vec![],
            ),
            ClientOp::Replicate(keys, replicas) => (
                FromClient::Replicate {
                    request,
                    keys: keys.clone(),
                    replicas: *replicas,
                },
                vec![],
            ),
            ClientOp::Publish(name, collection) => (
                FromClient::Publish {
                    request,
                    name: name.clone(),
                    collection: collection.clone(),
                },
                vec![],
            ),
            ClientOp::GetDataset(name) => (
                FromClient::GetDataset {
                    request,
                    name: name.clone(),
                },
                vec![],
            ),
            ClientOp::Unpublish(name) => (
                FromClient::Unpublish {
                    request,
                    name: name.clone(),
                },
                vec![],
            ),
            ClientOp::SetCollection(name, collection) => (
                FromClient::SetCollection {
                    request,
                    name: name.clone(),
                    collection: collection.clone(),
                },
                vec![],
            ),
            ClientOp::GetCollection(name) => (
                FromClient::GetCollection {
                    request,
                    name: name.clone(),
                },
                vec![],
            ),
            ClientOp::DeleteCollection(name) => (
                FromClient::DeleteCollection {
                    request,
                    name: name.clone(),
                },
                vec![],
            ),
            ClientOp::ListCollections => (FromClient::ListCollections { request }, vec![]),
            ClientOp::Status => (FromClient::Status { request }, vec![]),
            ClientOp::Restart => (FromClient::Restart { request }, vec![]),
            ClientOp::Cancel => {
                let waiting: Vec<u64> = self.clients[c].waiting.iter().copied().collect();
                if waiting.is_empty() {
                    return None;
                }
                let victim = *self.rng.pick(&waiting);
                self.clients[c].waiting.remove(&victim);
                self.client_send_raw(
                    c,
                    &FromClient::Cancel {
                        request: RequestId(victim),
                    },
                    vec![],
                );
                return None;
            }
            ClientOp::Goodbye => {
                self.client_send_raw(c, &FromClient::Goodbye, vec![]);
                self.clients[c].life = ClientLife::Left;
                return None;
            }
            ClientOp::GoSilent => {
                self.clients[c].life = ClientLife::Silent;
                return None;
            }
        };
        self.clients[c].next_request += 1;
        self.clients[c].waiting.insert(id);
        self.sent.insert((c, id), op);
        self.client_send_raw(c, &msg, frames);
        Some(id)
    }

    pub(crate) fn client_receives(&mut self, c: usize, msg: ToClient, frames: Vec<Frame>) -> R {
        let client = &mut self.clients[c];
        if client.life == ClientLife::Left {
            return Ok(()); // its connection is gone
        }
        if let ToClient::Rejected { error } = &msg {
            return Err(format!("c{c} was rejected: {error}"));
        }
        let Some(request) = msg.request().map(|r| r.0) else {
            return Ok(()); // Welcome, Pong
        };
        if !client.waiting.remove(&request) {
            return Ok(()); // cancelled, or a late answer to a ping
        }
        match msg {
            ToClient::Values { .. } => {
                let values = values_in_order(&msg, &frames).expect("checked when it left");
                client.values.insert(request, values);
            }
            ToClient::Failed { error, .. } => {
                client.errors.insert(request, error);
            }
            ToClient::Collection { collection, .. } => {
                let compute = client.life == ClientLife::Active
                    && (client.compute_fetched || (self.active_phase && self.rng.chance(60)));
                if compute {
                    let keep = self.rng.chance(20) && !self.clients[c].compute_fetched;
                    self.client_send(
                        c,
                        ClientOp::Submit {
                            graph: collection.graph,
                            outputs: collection.keys,
                            keep,
                        },
                    );
                }
            }
            _ => {}
        }
        Ok(())
    }

    pub(crate) fn client_op(&mut self) {
        let active: Vec<usize> = (0..self.clients.len())
            .filter(|c| self.clients[*c].life == ClientLife::Active)
            .collect();
        if active.is_empty() || self.rng.chance(3) {
            self.add_client();
            return;
        }
        let c = *self.rng.pick(&active);
        let op = random_op(
            &mut self.rng,
            &self.pool,
            &self.mix,
            self.clients[c].last_persisted.as_ref(),
        );
        self.client_send(c, op);
    }
}
