//! Execution feedback and epochs: the executed height moves the commit hold to the next possible
//! boundary; at a boundary the validator set may change, and the driver re-addresses its peers
//! and the network's member list.

use super::*;

impl Core {
    pub(super) fn on_executed(&mut self, height: Height, header_hash: Hash) {
        self.executed = height;
        self.sign_header(height, header_hash);
        if height >= self.hold {
            self.at_boundary(height);
        }
    }

    /// The boundary block executed: hand consensus the next epoch's set if governance changed
    /// it here, then hold commits at the next boundary.
    pub(super) fn at_boundary(&mut self, height: Height) {
        let next = match self.shared.validator_epoch() {
            Ok(e) => e,
            Err(e) => return self.shared.fail(e),
        };
        if let Some(next) = next.filter(|e| e.epoch > self.epoch && e.first_height == height + 1) {
            let keys = next.validators.iter().map(|v| v.public_key.0).collect();
            match tally_consensus::ValidatorSet::new(next.epoch, keys) {
                Ok(set) => {
                    tracing::info!(
                        epoch = next.epoch,
                        after = height,
                        validators = next.validators.len(),
                        "validator set changes"
                    );
                    self.local.push_back(Event::Reconfigure {
                        height,
                        validators: set,
                    });
                }
                Err(e) => {
                    return self
                        .shared
                        .fail(format!("the validator set of epoch {}: {e}", next.epoch))
                }
            }
        }
        // A boundary after the one that changed the set: the previous set's last headers are
        // long certified, so its keys are no longer admitted.
        if self
            .previous
            .as_ref()
            .is_some_and(|(last, _)| height > *last)
        {
            self.previous = None;
        }
        self.refresh_members();
        self.hold = next_boundary(height, self.params.epoch_blocks);
        self.local.push_back(Event::HoldCommits {
            height: Some(self.hold),
        });
    }

    /// Hands the network the keys it admits now (see `network_members`): at every boundary and
    /// epoch change, so governance removals take effect there. The latest list wins.
    pub(super) fn refresh_members(&self) {
        let previous = self
            .previous
            .as_ref()
            .map_or(&[][..], |(_, keys)| &keys[..]);
        let members = crate::runtime::network_members(
            &self.shared.store,
            &self.shared.genesis,
            &self.shared.validators(),
            previous,
        );
        let _ = self.members.send(members);
    }

    /// Consensus entered a new epoch: address its validators, admit them on the network.
    pub(super) fn adopt_epoch(&mut self) {
        let set = self.consensus.validators().clone();
        let keys: Vec<AccountId> = (0..set.len() as ValidatorIndex)
            .filter_map(|i| set.key(i).map(AccountId))
            .collect();
        let peers: Vec<PeerId> = keys
            .iter()
            .filter_map(|k| tally_network::peer_id_from_public_key(&k.0).ok())
            .collect();
        let old_keys = self.shared.validators();
        self.previous = Some((self.executed, old_keys));
        self.index_of = peers
            .iter()
            .enumerate()
            .map(|(i, p)| (*p, i as ValidatorIndex))
            .collect();
        self.peers = peers;
        self.me = set
            .index_of(&self.params.key.verifying_key().to_bytes())
            .unwrap_or(NOT_A_VALIDATOR);
        self.epoch = self.consensus.epoch();
        self.shared.set_validators(keys.clone());
        self.refresh_members();
        self.shared.metrics.consensus_epoch.set(self.epoch as i64);
        tracing::info!(
            epoch = self.epoch,
            validators = keys.len(),
            validator = self.me != NOT_A_VALIDATOR,
            "epoch started"
        );
    }

    /// True if `peer` was a validator of the previous epoch (its last votes may still come).
    pub(super) fn was_validator(&self, peer: &PeerId) -> bool {
        self.previous.as_ref().is_some_and(|(_, keys)| {
            keys.iter()
                .any(|k| tally_network::peer_id_from_public_key(&k.0).ok().as_ref() == Some(peer))
        })
    }
}
