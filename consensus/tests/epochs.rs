//! Commit holds and epoch changes as the node drives them: four replicas with instant,
//! in-order delivery; the node's role (payloads, payload checks) is played by the pump.

use ed25519_dalek::SigningKey;
use std::collections::VecDeque;
use tally_consensus::{
    Action, Block, Config, Consensus, Event, Height, ValidatorIndex, ValidatorSet,
};

struct Net {
    replicas: Vec<Consensus>,
    queue: VecDeque<(usize, Event)>,
    committed: Vec<Vec<Height>>,
}

impl Net {
    fn new(n: usize) -> Net {
        let keys: Vec<SigningKey> = (0..n)
            .map(|i| SigningKey::from_bytes(&[i as u8 + 1; 32]))
            .collect();
        let set = ValidatorSet::new(
            0,
            keys.iter().map(|k| k.verifying_key().to_bytes()).collect(),
        )
        .expect("validator set");
        let replicas = keys
            .iter()
            .map(|k| {
                Consensus::new(
                    Config::default(),
                    k.clone(),
                    set.clone(),
                    Block::genesis(&set),
                    None,
                )
            })
            .collect();
        Net {
            replicas,
            queue: VecDeque::new(),
            committed: vec![Vec::new(); n],
        }
    }

    fn start(&mut self) {
        for i in 0..self.replicas.len() {
            let actions = self.replicas[i].start();
            self.perform(i, actions);
        }
    }

    fn send(&mut self, to: usize, event: Event) {
        self.queue.push_back((to, event));
    }

    fn perform(&mut self, i: usize, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send { to, bytes } => self.send(
                    to as usize,
                    Event::Message {
                        from: i as ValidatorIndex,
                        bytes,
                    },
                ),
                Action::Broadcast { bytes } => {
                    for to in 0..self.replicas.len() {
                        if to != i {
                            self.send(
                                to,
                                Event::Message {
                                    from: i as ValidatorIndex,
                                    bytes: bytes.clone(),
                                },
                            );
                        }
                    }
                }
                Action::RequestPayload { round, .. } => self.send(
                    i,
                    Event::Payload {
                        round,
                        digests: Vec::new(),
                        timestamp_ms: 1,
                    },
                ),
                Action::ValidatePayload { block, .. } => {
                    self.send(i, Event::PayloadValidated { block, valid: true })
                }
                Action::Commit { block, .. } => self.committed[i].push(block.height),
                _ => {}
            }
        }
    }

    /// Delivers up to `steps` events.
    fn run(&mut self, steps: usize) {
        for _ in 0..steps {
            let Some((to, event)) = self.queue.pop_front() else {
                return;
            };
            let actions = self.replicas[to].handle(event);
            self.perform(to, actions);
        }
    }

    fn tell_all(&mut self, event: Event) {
        for i in 0..self.replicas.len() {
            let actions = self.replicas[i].handle(event.clone());
            self.perform(i, actions);
        }
    }

    fn max_committed(&self) -> Height {
        self.committed
            .iter()
            .map(|c| c.last().copied().unwrap_or(0))
            .max()
            .unwrap_or(0)
    }
}

#[test]
fn a_hold_stops_commits_at_its_height_and_lifting_it_commits_the_rest() {
    let mut net = Net::new(4);
    net.tell_all(Event::HoldCommits { height: Some(5) });
    net.start();
    net.run(6_000);
    // Voting went on (rounds advanced well past the hold), but nothing above 5 committed.
    assert_eq!(net.max_committed(), 5);
    assert!(net.replicas.iter().all(|r| r.round() > 8), "rounds stalled");
    for c in &net.committed {
        assert_eq!(c, &(1..=5).collect::<Vec<_>>());
    }
    net.tell_all(Event::HoldCommits { height: None });
    net.run(2_000);
    assert!(net.max_committed() > 8);
    // Heights commit once each and in order on every replica.
    for c in &net.committed {
        assert!(c.windows(2).all(|w| w[1] == w[0] + 1), "{c:?}");
    }
}

#[test]
fn a_set_announced_during_the_hold_takes_over_after_the_boundary() {
    let mut net = Net::new(4);
    net.tell_all(Event::HoldCommits { height: Some(4) });
    net.start();
    net.run(5_000);
    assert_eq!(net.max_committed(), 4);
    // The boundary block executed: the node announces the next set (validator 3 leaves).
    let keys: Vec<[u8; 32]> = (0..3)
        .filter_map(|i| net.replicas[0].validators().key(i))
        .collect();
    let next = ValidatorSet::new(1, keys).expect("set");
    net.tell_all(Event::Reconfigure {
        height: 4,
        validators: next,
    });
    assert!(net.replicas.iter().all(|r| r.epoch() == 1));
    net.run(6_000);
    // The three remaining validators keep committing on top of block 4.
    for c in &net.committed[..3] {
        assert!(c.len() > 10, "{c:?}");
        assert!(c.windows(2).all(|w| w[1] == w[0] + 1), "{c:?}");
    }
}
