//! Consortium governance: members propose and vote with their keys; a proposal passes with more
//! than two thirds of the members and takes effect at the start of the block at the height it
//! names. Everything here runs inside deterministic execution.

use super::registry::{role_key, sanction_key, Role, RoleEntry, PROVIDERS_KEY, RULES_KEY};
use super::rules::{RuleSet, SanctionsUpdate, Tier};
use crate::primitives::{AccountId, Height};
use crate::{Event, Overlay, RejectCode, Rejection, StateError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One validator of a set: in genesis and in `set_validators` proposals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisValidator {
    /// Human name, e.g. the member institution.
    pub name: String,
    /// Its ed25519 key: consensus key and libp2p identity.
    pub public_key: AccountId,
    /// Its libp2p address, e.g. `/ip4/10.0.0.5/tcp/7000`.
    pub p2p_addr: String,
    /// Its HTTP API address, e.g. `10.0.0.5:8700`.
    pub api_addr: String,
}

/// What a proposal changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum GovAction {
    /// Replace the rule set (its version becomes the current one + 1). Its `version` names the
    /// version it replaces: refused when proposed otherwise, superseded if that moved by its
    /// height. The sanctions list in force is kept.
    SetRules(RuleSet),
    /// Add and remove sanctions-list entries (e.g. loaded from a CSV file); bumps the rule-set
    /// version.
    UpdateSanctions(SanctionsUpdate),
    /// Create or replace a key's registry entry.
    SetRole(RoleEntry),
    /// Remove a key from the registry.
    RemoveRole {
        /// The key.
        key: AccountId,
    },
    /// Replace the validator set; the effective height must be an epoch boundary.
    SetValidators {
        /// The new set.
        validators: Vec<GenesisValidator>,
    },
    /// Change a governance parameter (see [`Params`]).
    SetParameter {
        /// Parameter name.
        name: String,
        /// New value.
        value: u64,
    },
}

impl GovAction {
    /// The action's name as proposals spell it (`set_rules`, `update_sanctions`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            GovAction::SetRules(_) => "set_rules",
            GovAction::UpdateSanctions(_) => "update_sanctions",
            GovAction::SetRole(_) => "set_role",
            GovAction::RemoveRole { .. } => "remove_role",
            GovAction::SetValidators { .. } => "set_validators",
            GovAction::SetParameter { .. } => "set_parameter",
        }
    }
}

/// A proposal that came due at a block: what it was and whether it took effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueProposal {
    /// Its id.
    pub id: u64,
    /// Its action's name ([`GovAction::kind`]).
    pub kind: &'static str,
    /// `Applied` or `Superseded`.
    pub status: ProposalStatus,
}

/// Where a proposal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalStatus {
    /// Collecting votes.
    Open,
    /// More than two thirds of the members approved; waits for its height.
    Passed,
    /// Enough members voted no that it can no longer pass.
    Rejected,
    /// It did not pass before its effective height or its voting period ended.
    Expired,
    /// It took effect.
    Applied,
    /// It passed, but by its height its premise no longer held, so it did not take effect: the
    /// rule set it was drafted against had changed (another `set_rules` or an
    /// `update_sanctions` applied first; it would have undone that change), or a validator-set
    /// change found another applied at the same boundary or no longer kept a quorum of
    /// validators already running. Draft it again against the state in force.
    Superseded,
}

/// A governance proposal as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Sequential id.
    pub id: u64,
    /// The member that proposed it (its proposal counts as its yes vote).
    pub proposer: AccountId,
    /// What it changes.
    pub action: GovAction,
    /// The height at whose start it takes effect.
    pub effective_height: Height,
    /// The height it was proposed at.
    pub proposed_height: Height,
    /// Members that voted yes.
    pub yes: BTreeSet<AccountId>,
    /// Members that voted no.
    pub no: BTreeSet<AccountId>,
    /// Where it stands.
    pub status: ProposalStatus,
}

impl Proposal {
    /// Its status as of `height`: an open proposal whose voting window or effective height has
    /// passed is expired, whether or not anyone has voted since (a late vote is refused, so
    /// nothing records it in state).
    pub fn status_at(&self, height: Height, params: &Params) -> ProposalStatus {
        let voting_ends = self
            .proposed_height
            .saturating_add(params.proposal_voting_blocks);
        let closed = height >= self.effective_height || height > voting_ends;
        if self.status == ProposalStatus::Open && closed {
            return ProposalStatus::Expired;
        }
        self.status
    }
}

/// Governance parameters: set at genesis, changed by `SetParameter` proposals (except
/// `epoch_blocks`, which is fixed at genesis).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Longest a KYC provider may make an identity valid from the current block time, in days.
    pub identity_max_validity_days: u64,
    /// Blocks a proposal stays open for votes.
    pub proposal_voting_blocks: u64,
    /// Validator-set changes take effect only at heights that are multiples of this.
    pub epoch_blocks: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            identity_max_validity_days: 3 * 365,
            proposal_voting_blocks: 1_000_000,
            epoch_blocks: 1_000,
        }
    }
}

impl Params {
    /// Sets one parameter by name; the error names it.
    pub fn set(&mut self, name: &str, value: u64) -> Result<(), String> {
        if value == 0 {
            return Err(format!("parameter {name}: must be greater than zero"));
        }
        match name {
            "identity_max_validity_days" => self.identity_max_validity_days = value,
            "proposal_voting_blocks" => self.proposal_voting_blocks = value,
            "epoch_blocks" => {
                return Err(
                    "parameter epoch_blocks: fixed at genesis (every node holds commits at its boundaries)"
                        .into(),
                )
            }
            _ => return Err(format!("parameter {name:?} does not exist")),
        }
        Ok(())
    }
}

/// The consensus validator set as execution knows it: the set that signs blocks from
/// `first_height` on. Genesis writes epoch 0; a `set_validators` proposal applied at an epoch
/// boundary B writes the next epoch, whose first block is B + 1 (the node hands it to consensus
/// once it has executed B).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorEpoch {
    /// Consensus epoch.
    pub epoch: u64,
    /// First height this set signs.
    pub first_height: Height,
    /// The set, in consensus index order.
    pub validators: Vec<GenesisValidator>,
}

/// Largest validator set a proposal may name.
pub const MAX_VALIDATORS: usize = 1_000;

/// State key of the governance parameters.
pub const PARAMS_KEY: &[u8] = b"gov/params";
/// State key of the member set.
pub const MEMBERS_KEY: &[u8] = b"gov/members";
/// State key of the next proposal id.
pub const NEXT_PROPOSAL_KEY: &[u8] = b"gov/next_proposal";
/// State key of the current [`ValidatorEpoch`].
pub const VALIDATORS_KEY: &[u8] = b"gov/validators";

/// `gov/proposal/` + big-endian id.
pub fn proposal_key(id: u64) -> Vec<u8> {
    let mut k = b"gov/proposal/".to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// `gov/at/` + big-endian height: ids of passed proposals that take effect there.
pub fn schedule_key(height: Height) -> Vec<u8> {
    let mut k = b"gov/at/".to_vec();
    k.extend_from_slice(&height.to_be_bytes());
    k
}

/// Checks an action's content; the error names the field.
pub fn validate_action(action: &GovAction) -> Result<(), String> {
    match action {
        GovAction::SetRules(r) => r.validate(),
        GovAction::UpdateSanctions(u) => u.validate(),
        GovAction::SetRole(e) => e.validate(),
        GovAction::RemoveRole { .. } => Ok(()),
        GovAction::SetValidators { validators } => {
            if validators.is_empty() {
                return Err("validators: at least one validator is required".into());
            }
            if validators.len() > MAX_VALIDATORS {
                return Err(format!(
                    "validators: {} validators; at most {MAX_VALIDATORS}",
                    validators.len()
                ));
            }
            let mut seen = BTreeSet::new();
            for (i, v) in validators.iter().enumerate() {
                if !seen.insert(v.public_key) {
                    return Err(format!("validators[{i}].public_key: duplicate"));
                }
                // Every node builds its consensus set from these keys at the boundary: one
                // that is not a curve point would stop the network there.
                if !ed25519_dalek::VerifyingKey::from_bytes(&v.public_key.0)
                    .is_ok_and(|k| !k.is_weak())
                {
                    return Err(format!(
                        "validators[{i}].public_key: not an ed25519 key of full order"
                    ));
                }
            }
            Ok(())
        }
        GovAction::SetParameter { name, value } => Params::default().set(name, *value),
    }
}

fn reject(code: RejectCode, reason: String) -> Rejection {
    Rejection::new(code, reason)
}

/// The governance parameters.
pub fn params(o: &Overlay<'_>) -> Result<Params, StateError> {
    Ok(o.get(PARAMS_KEY)?.unwrap_or_default())
}

/// The registry entry of a key.
pub fn role_entry(o: &Overlay<'_>, key: &AccountId) -> Result<Option<RoleEntry>, StateError> {
    o.get(&role_key(key))
}

fn members(o: &Overlay<'_>) -> Result<BTreeSet<AccountId>, StateError> {
    Ok(o.get(MEMBERS_KEY)?.unwrap_or_default())
}

/// The KYC providers and the highest tier each may register.
pub fn kyc_providers(o: &Overlay<'_>) -> Result<BTreeMap<AccountId, Tier>, StateError> {
    Ok(o.get(PROVIDERS_KEY)?.unwrap_or_default())
}

/// Writes a registry entry and keeps the member set and the provider table in step.
pub fn put_role(o: &mut Overlay<'_>, entry: &RoleEntry) -> Result<(), StateError> {
    let mut m = members(o)?;
    if entry.has(Role::Member) {
        m.insert(entry.key);
    } else {
        m.remove(&entry.key);
    }
    o.put(MEMBERS_KEY.to_vec(), &m);
    let mut providers = kyc_providers(o)?;
    match entry.provider_max_tier() {
        Some(tier) => providers.insert(entry.key, tier),
        None => providers.remove(&entry.key),
    };
    o.put(PROVIDERS_KEY.to_vec(), &providers);
    o.put(role_key(&entry.key), entry);
    Ok(())
}

fn remove_role(o: &mut Overlay<'_>, key: &AccountId) -> Result<(), StateError> {
    let mut m = members(o)?;
    m.remove(key);
    o.put(MEMBERS_KEY.to_vec(), &m);
    let mut providers = kyc_providers(o)?;
    providers.remove(key);
    o.put(PROVIDERS_KEY.to_vec(), &providers);
    o.delete(role_key(key));
    Ok(())
}

type Outcome = Result<Result<Vec<Event>, Rejection>, StateError>;

fn require_member(o: &Overlay<'_>, sender: &AccountId) -> Result<Option<Rejection>, StateError> {
    let is_member = role_entry(o, sender)?.is_some_and(|e| e.has(Role::Member));
    Ok((!is_member).then(|| {
        reject(
            RejectCode::Unauthorized,
            format!("{sender} is not a consortium member"),
        )
    }))
}

/// A member proposes; its proposal is its yes vote.
pub fn propose(
    o: &mut Overlay<'_>,
    sender: &AccountId,
    height: Height,
    action: &GovAction,
    effective_height: Height,
) -> Outcome {
    if let Some(r) = require_member(o, sender)? {
        return Ok(Err(r));
    }
    if effective_height <= height {
        return Ok(Err(reject(
            RejectCode::InvalidProposal,
            format!("effective height {effective_height} is not after the current height {height}"),
        )));
    }
    let p = params(o)?;
    if let GovAction::SetValidators { validators } = action {
        if effective_height % p.epoch_blocks != 0 {
            return Ok(Err(reject(
                RejectCode::InvalidProposal,
                format!(
                    "validator-set changes take effect at an epoch boundary (a multiple of {} blocks); {effective_height} is not",
                    p.epoch_blocks
                ),
            )));
        }
        if let Err(m) = keeps_a_quorum(&validator_epoch(o)?.validators, validators) {
            return Ok(Err(reject(RejectCode::InvalidProposal, m)));
        }
    }
    if let GovAction::SetRules(proposed) = action {
        if let Some(current) = o.get::<RuleSet>(RULES_KEY)? {
            if proposed.version != current.version {
                return Ok(Err(reject(
                    RejectCode::InvalidProposal,
                    format!(
                        "version: the change names rule-set version {} as its base, but version {} is in force; draft it against that",
                        proposed.version, current.version
                    ),
                )));
            }
            if !proposed.sanctioned_jurisdictions.is_empty()
                && proposed.sanctioned_jurisdictions != current.sanctioned_jurisdictions
            {
                return Ok(Err(reject(
                    RejectCode::InvalidProposal,
                    "sanctioned_jurisdictions: sanctions change only through update_sanctions; a rule-set change keeps the list in force (leave the field out)".into(),
                )));
            }
        }
    }
    let id: u64 = o.get(NEXT_PROPOSAL_KEY)?.unwrap_or(1);
    o.put(NEXT_PROPOSAL_KEY.to_vec(), &(id + 1));
    let mut proposal = Proposal {
        id,
        proposer: *sender,
        action: action.clone(),
        effective_height,
        proposed_height: height,
        yes: BTreeSet::from([*sender]),
        no: BTreeSet::new(),
        status: ProposalStatus::Open,
    };
    let mut events = vec![Event::ProposalCreated {
        proposal: id,
        effective_height,
    }];
    events.extend(tally(o, &mut proposal, height)?);
    o.put(proposal_key(id), &proposal);
    Ok(Ok(events))
}

/// A member votes on an open proposal (a later vote replaces its earlier one).
pub fn vote(
    o: &mut Overlay<'_>,
    sender: &AccountId,
    height: Height,
    id: u64,
    approve: bool,
) -> Outcome {
    if let Some(r) = require_member(o, sender)? {
        return Ok(Err(r));
    }
    let Some(mut proposal) = o.get::<Proposal>(&proposal_key(id))? else {
        return Ok(Err(reject(
            RejectCode::UnknownProposal,
            format!("proposal {id} does not exist"),
        )));
    };
    if proposal.status != ProposalStatus::Open {
        return Ok(Err(reject(
            RejectCode::ProposalClosed,
            format!("proposal {id} is {:?}, not open", proposal.status),
        )));
    }
    let voting_ends = proposal
        .proposed_height
        .saturating_add(params(o)?.proposal_voting_blocks);
    if height >= proposal.effective_height || height > voting_ends {
        // Voting closed: the vote is refused, not answered `ok`, and changes nothing. The
        // proposal, never passed, is expired; `GET /v1/governance/proposals/{id}` shows it so.
        let closed_at = voting_ends.min(proposal.effective_height.saturating_sub(1));
        return Ok(Err(reject(
            RejectCode::ProposalClosed,
            format!("voting on proposal {id} closed after height {closed_at}"),
        )));
    }
    if approve {
        proposal.no.remove(sender);
        proposal.yes.insert(*sender);
    } else {
        proposal.yes.remove(sender);
        proposal.no.insert(*sender);
    }
    let mut events = vec![Event::Voted {
        proposal: id,
        approve,
    }];
    events.extend(tally(o, &mut proposal, height)?);
    o.put(proposal_key(id), &proposal);
    Ok(Ok(events))
}

/// Counts the current members' votes: more than two thirds yes passes (and schedules) the
/// proposal; once that can no longer happen it is rejected.
fn tally(
    o: &mut Overlay<'_>,
    proposal: &mut Proposal,
    height: Height,
) -> Result<Vec<Event>, StateError> {
    let m = members(o)?;
    let n = m.len() as u64;
    let yes = proposal.yes.iter().filter(|k| m.contains(k)).count() as u64;
    let no = proposal.no.iter().filter(|k| m.contains(k)).count() as u64;
    if yes * 3 > n * 2 {
        if proposal.effective_height <= height {
            proposal.status = ProposalStatus::Expired;
            return Ok(vec![Event::ProposalExpired {
                proposal: proposal.id,
            }]);
        }
        proposal.status = ProposalStatus::Passed;
        let key = schedule_key(proposal.effective_height);
        let mut ids: Vec<u64> = o.get(&key)?.unwrap_or_default();
        ids.push(proposal.id);
        o.put(key, &ids);
        return Ok(vec![Event::ProposalPassed {
            proposal: proposal.id,
            effective_height: proposal.effective_height,
        }]);
    }
    if (n - no.min(n)) * 3 <= n * 2 {
        proposal.status = ProposalStatus::Rejected;
        return Ok(vec![Event::ProposalRejected {
            proposal: proposal.id,
        }]);
    }
    Ok(Vec::new())
}

/// Applies the proposals that take effect at `height`, in the order they passed, before the
/// block's transactions. Returns each, applied or superseded.
pub fn begin_block(o: &mut Overlay<'_>, height: Height) -> Result<Vec<DueProposal>, StateError> {
    let key = schedule_key(height);
    let Some(ids) = o.get::<Vec<u64>>(&key)? else {
        return Ok(Vec::new());
    };
    let mut due = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(mut proposal) = o.get::<Proposal>(&proposal_key(id))? else {
            continue;
        };
        proposal.status = if apply(o, &proposal.action, height)? {
            ProposalStatus::Applied
        } else {
            ProposalStatus::Superseded
        };
        due.push(DueProposal {
            id,
            kind: proposal.action.kind(),
            status: proposal.status,
        });
        o.put(proposal_key(id), &proposal);
    }
    o.delete(key);
    o.commit_tx();
    Ok(due)
}

fn bump_rules(o: &mut Overlay<'_>, mut rules: RuleSet) -> Result<(), StateError> {
    let current: Option<RuleSet> = o.get(RULES_KEY)?;
    rules.version = current.map_or(1, |r| r.version + 1);
    o.put(RULES_KEY.to_vec(), &rules);
    Ok(())
}

/// The validator set in force (or starting at the next height). Genesis writes epoch 0; a
/// state without it counts as epoch 0 with no validators.
fn validator_epoch(o: &Overlay<'_>) -> Result<ValidatorEpoch, StateError> {
    Ok(o.get(VALIDATORS_KEY)?.unwrap_or_else(|| ValidatorEpoch {
        epoch: 0,
        first_height: 1,
        validators: Vec::new(),
    }))
}

/// A new validator set must not depend on keys that have never run: the validators of the
/// current set that stay in `next` must make a quorum of `next` on their own, so the chain
/// goes on even if every incoming validator is offline at the boundary. Larger replacements
/// are made over several epochs. (From no set at all, as in a bare test state, anything goes.)
pub fn keeps_a_quorum(
    current: &[GenesisValidator],
    next: &[GenesisValidator],
) -> Result<(), String> {
    if current.is_empty() {
        return Ok(());
    }
    let running: BTreeSet<&AccountId> = current.iter().map(|c| &c.public_key).collect();
    let staying = next
        .iter()
        .filter(|v| running.contains(&v.public_key))
        .count();
    let needed = crate::block::quorum(next.len());
    if staying < needed {
        return Err(format!(
            "validators: {staying} of the {} validators are in the current set, and a quorum of the new set ({needed}) must be; replace at most {} at a time, one epoch after another",
            next.len(),
            next.len() - needed
        ));
    }
    Ok(())
}

/// Applies one passed action; false if it is a change whose premise no longer holds (a
/// rule-set change whose base version moved, a validator-set change that would no longer keep
/// a quorum of running validators).
fn apply(o: &mut Overlay<'_>, action: &GovAction, height: Height) -> Result<bool, StateError> {
    match action {
        GovAction::SetRules(rules) => {
            let current: Option<RuleSet> = o.get(RULES_KEY)?;
            let mut rules = rules.clone();
            if let Some(current) = current {
                if current.version != rules.version {
                    return Ok(false);
                }
                // Sanctions change only through update_sanctions: a rule-set change keeps the
                // list in force, whatever the proposal carried.
                rules.sanctioned_jurisdictions = current.sanctioned_jurisdictions;
            }
            bump_rules(o, rules)?
        }
        GovAction::UpdateSanctions(u) => {
            let Some(mut rules) = o.get::<RuleSet>(RULES_KEY)? else {
                return Ok(true);
            };
            for id in &u.remove_identities {
                o.delete(sanction_key(id));
            }
            for id in &u.add_identities {
                o.put(sanction_key(id), &u.list);
            }
            for j in &u.remove_jurisdictions {
                rules.sanctioned_jurisdictions.remove(j);
            }
            rules
                .sanctioned_jurisdictions
                .extend(u.add_jurisdictions.iter().copied());
            bump_rules(o, rules)?;
        }
        GovAction::SetRole(entry) => put_role(o, entry)?,
        GovAction::RemoveRole { key } => remove_role(o, key)?,
        GovAction::SetValidators { validators } => {
            let current = validator_epoch(o)?;
            // One change per boundary: after another applied here, the set running now is no
            // longer known to check this one against. And the set may have changed since the
            // proposal was checked: the validators that stay must still make a quorum.
            if current.first_height == height + 1
                || keeps_a_quorum(&current.validators, validators).is_err()
            {
                return Ok(false);
            }
            for v in &current.validators {
                if let Some(mut entry) = role_entry(o, &v.public_key)? {
                    entry.roles.remove(&Role::Validator);
                    put_role(o, &entry)?;
                }
            }
            for v in validators {
                let mut entry = role_entry(o, &v.public_key)?.unwrap_or_else(|| RoleEntry {
                    name: v.name.clone(),
                    key: v.public_key,
                    roles: BTreeSet::new(),
                    jurisdictions: BTreeSet::new(),
                    max_tier: None,
                });
                entry.roles.insert(Role::Validator);
                put_role(o, &entry)?;
            }
            // Two changes due at the same boundary: the later one replaces the earlier within
            // the same next epoch (consensus moves one epoch at a time).
            let epoch = if current.first_height == height + 1 {
                current.epoch
            } else {
                current.epoch + 1
            };
            o.put(
                VALIDATORS_KEY.to_vec(),
                &ValidatorEpoch {
                    epoch,
                    first_height: height + 1,
                    validators: validators.clone(),
                },
            );
        }
        GovAction::SetParameter { name, value } => {
            let mut p = params(o)?;
            // Validated when proposed; a name that no longer exists is skipped.
            if p.set(name, *value).is_ok() {
                o.put(PARAMS_KEY.to_vec(), &p);
            }
        }
    }
    Ok(true)
}
