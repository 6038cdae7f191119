//! A Byzantine validator for fault tests: a validator's key in a bare libp2p node that sends
//! correctly signed messages with forged or mutated fields to the honest validators, through the
//! same protocols a validator uses (direct consensus messages, batch gossip, sync requests).

use ed25519_dalek::{Signature, Signer, SigningKey};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tally_consensus::{
    timeout_digest, vote_digest, Block, BlockRequest, Digest, Message, QuorumCert, Timeout,
    ValidatorIndex, ValidatorSet, Vote, SYNC_CHUNK,
};
use tally_ledger::codec;
use tally_ledger::genesis::Genesis;
use tally_ledger::primitives::AccountId;
use tally_ledger::tx::SignedTransaction;
use tally_network::{
    BootstrapPeer, Multiaddr, Network, NetworkConfig, NetworkEvent, NetworkHandle, PeerId,
};
use tally_node::runtime::batches::{self, Attestation, Batch};
use tally_node::runtime::wire::{DirectMessage, SyncRequest, SyncResponse, BATCH_TOPIC};
use tokio::sync::{mpsc, Mutex};

/// Validator `index`'s key, connected to the other genesis validators.
pub struct Forger {
    /// Its network.
    pub net: NetworkHandle,
    /// The key it signs with.
    pub key: SigningKey,
    /// The honest validators it talks to.
    pub peers: Vec<PeerId>,
    index: ValidatorIndex,
    set: ValidatorSet,
    /// Consensus messages the honest validators sent it (the newest are dropped when full).
    inbox: Mutex<mpsc::Receiver<Message>>,
}

impl Forger {
    /// Joins the network on `listen` and waits until connected to every other validator.
    pub async fn join(
        key: SigningKey,
        index: usize,
        listen: Multiaddr,
        genesis: &Genesis,
    ) -> Forger {
        let validators = &genesis.validators;
        let mut config = NetworkConfig::new(key.to_bytes(), vec![listen]);
        config.members = validators.iter().map(|v| v.public_key.0).collect();
        config.topics = vec![BATCH_TOPIC.to_string()];
        let others: Vec<_> = validators
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, v)| v)
            .collect();
        config.bootstrap = others
            .iter()
            .map(|v| BootstrapPeer {
                public_key: v.public_key.0,
                addr: v.p2p_addr.parse().expect("multiaddr"),
            })
            .collect();
        let registry = prometheus::Registry::new();
        let (net, mut events) = Network::spawn(config, &registry).expect("network");
        let (inbox_tx, inbox) = mpsc::channel(4096);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let NetworkEvent::Direct { data, .. } = event else {
                    continue;
                };
                if let Ok(DirectMessage::Consensus(bytes)) = codec::decode(&data, 8 << 20) {
                    if let Ok(m) = Message::from_bytes(&bytes, 8 << 20) {
                        let _ = inbox_tx.try_send(m);
                    }
                }
            }
        });
        let peers: Vec<PeerId> = others
            .iter()
            .map(|v| tally_network::peer_id_from_public_key(&v.public_key.0).expect("peer id"))
            .collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while net.connected_peers().len() < peers.len() {
            assert!(tokio::time::Instant::now() < deadline, "never connected");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let set = ValidatorSet::new(0, validators.iter().map(|v| v.public_key.0).collect())
            .expect("validator set");
        Forger {
            net,
            key,
            peers,
            index: index as ValidatorIndex,
            set,
            inbox: Mutex::new(inbox),
        }
    }

    /// Waits for an honest block certified by the votes it sees whose next round it leads,
    /// then proposes on it a block stamped `ahead` in the future (validly signed, justified by
    /// a real QC, later than its parent). Returns it, or `None` if no such round came `within`.
    pub async fn propose_from_the_future(
        &self,
        ahead: Duration,
        within: Duration,
    ) -> Option<Block> {
        let deadline = tokio::time::Instant::now() + within;
        let mut inbox = self.inbox.lock().await;
        let mut proposals: BTreeMap<Digest, Block> = BTreeMap::new();
        let mut votes: BTreeMap<Digest, BTreeMap<ValidatorIndex, Signature>> = BTreeMap::new();
        loop {
            let m = tokio::time::timeout_at(deadline, inbox.recv())
                .await
                .ok()??;
            let id = match m {
                Message::Proposal(b) => {
                    let id = b.id();
                    proposals.insert(id, b);
                    id
                }
                Message::Vote(v) => {
                    votes
                        .entry(v.block)
                        .or_default()
                        .insert(v.voter, v.signature);
                    v.block
                }
                _ => continue,
            };
            let Some(parent) = proposals.get(&id) else {
                continue;
            };
            let signers = votes.get(&id).map_or(0, |v| v.len());
            let next = parent.round + 1;
            if signers < self.set.quorum() || self.set.leader(next) != self.index {
                continue;
            }
            let qc = QuorumCert {
                epoch: parent.epoch,
                round: parent.round,
                height: parent.height,
                block: id,
                signatures: votes[&id].iter().map(|(i, s)| (*i, *s)).collect(),
            };
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_millis() as u64;
            let mut block = Block {
                epoch: parent.epoch,
                round: next,
                height: parent.height + 1,
                parent: id,
                justify: qc,
                timeout_cert: None,
                author: self.index,
                timestamp_ms: now_ms + ahead.as_millis() as u64,
                payload: Vec::new(),
                signature: Signature::from_bytes(&[0; 64]),
            };
            block.signature = self.key.sign(&block.id().0);
            self.send_consensus(&Message::Proposal(block.clone())).await;
            return Some(block);
        }
    }

    async fn send_consensus(&self, m: &Message) {
        let data = codec::encode(&DirectMessage::Consensus(m.to_bytes()));
        for p in &self.peers {
            let _ = self.net.send(*p, data.clone()).await;
        }
    }

    /// Timeouts for `rounds`, each carrying the genesis certificate with a forged round near
    /// `u64::MAX` and no signatures.
    pub async fn forged_root_timeouts(&self, rounds: &[u64]) {
        let (_, root_qc) = Block::genesis(&self.set);
        let forged = QuorumCert {
            round: u64::MAX - 2,
            signatures: Vec::new(),
            ..root_qc
        };
        for &round in rounds {
            let signature = self.key.sign(&timeout_digest(0, round, forged.round).0);
            let t = Message::Timeout(Timeout {
                epoch: 0,
                round,
                high_qc: forged.clone(),
                voter: self.index,
                signature,
                entered_by: None,
            });
            self.send_consensus(&t).await;
        }
    }

    /// Two different signed votes for one round.
    pub async fn equivocate(&self, round: u64) {
        for block in [Digest([1; 32]), Digest([2; 32])] {
            let signature = self.key.sign(&vote_digest(0, round, 1, &block).0);
            let v = Message::Vote(Vote {
                epoch: 0,
                round,
                height: 1,
                block,
                voter: self.index,
                signature,
            });
            self.send_consensus(&v).await;
        }
    }

    /// Gossips a batch holding `tx` that names `author` (another validator) as its author.
    pub async fn batch_in_the_name_of(&self, author: AccountId, tx: SignedTransaction) {
        let batch = Batch {
            author,
            nonce: 7,
            txs: vec![tx],
        };
        let _ = self.net.publish(BATCH_TOPIC, codec::encode(&batch)).await;
    }

    /// Gossips a batch in its own name whose transaction carries another key's signature, and
    /// attests it (one attestation, where f + 1 are needed), plus an attestation whose
    /// signature is over another digest. Returns the batch's transaction.
    pub async fn attest_a_forged_batch(&self, mut tx: SignedTransaction) -> SignedTransaction {
        tx.signature = SigningKey::from_bytes(&[0xEE; 32]).sign(&tx.hash().0);
        let batch = Batch {
            author: AccountId(self.key.verifying_key().to_bytes()),
            nonce: 8,
            txs: vec![tx.clone()],
        };
        let bytes = codec::encode(&batch);
        let digest = batches::digest(&bytes);
        let _ = self.net.publish(BATCH_TOPIC, bytes).await;
        let own = Attestation::sign(digest, &self.key);
        let mut mis_signed = Attestation::sign(Digest([0xAB; 32]), &self.key);
        mis_signed.digest = digest;
        for a in [own, mis_signed] {
            let data = codec::encode(&DirectMessage::Attestation(a));
            for p in &self.peers {
                let _ = self.net.send(*p, data.clone()).await;
            }
        }
        tx
    }

    /// `n` concurrent requests to the first peer for unknown blocks, each asking for as many
    /// blocks as it can; returns how many were answered (requests over this node's own stream
    /// limit fail locally). Panics on an answer over the chunk.
    pub async fn sync_flood(&self, n: u8) -> usize {
        let mut asks = Vec::new();
        for k in 0..n {
            let request = SyncRequest::Blocks(BlockRequest {
                block: Digest([k; 32]),
                after_height: 0,
                max_blocks: u32::MAX,
            });
            let net = self.net.clone();
            let to = self.peers[0];
            asks.push(tokio::spawn(async move {
                net.request(to, codec::encode(&request)).await
            }));
        }
        let mut answered = 0;
        for a in asks {
            if let Ok(Ok(bytes)) = a.await {
                answered += 1;
                match codec::decode::<SyncResponse>(&bytes, 64 << 20) {
                    Ok(SyncResponse::Blocks(blocks)) => {
                        assert!(blocks.len() <= SYNC_CHUNK as usize)
                    }
                    other => panic!("unexpected answer {other:?}"),
                }
            }
        }
        answered
    }
}
