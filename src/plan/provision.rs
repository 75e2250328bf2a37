//! The provision-state path from what a node is to what it is declared to be.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::vocab::{ProvisionState, ProvisionTarget};

/// Ironic's provision verbs that rivet uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    /// enroll/available → manageable (verifying credentials).
    Manage,
    /// manageable → available (cleaning).
    Provide,
    /// available → active (deploying).
    Deploy,
    /// active → active with a new instance (deploying).
    Rebuild,
    /// active → available (deleting, cleaning).
    Undeploy,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manage => "manage",
            Self::Provide => "provide",
            Self::Deploy => "deploy",
            Self::Rebuild => "rebuild",
            Self::Undeploy => "undeploy",
        }
    }

    /// The states a node passes through while the verb runs.
    pub fn via(self) -> &'static [ProvisionState] {
        match self {
            Self::Manage => &[ProvisionState::Verifying],
            Self::Provide => &[ProvisionState::Cleaning],
            Self::Deploy | Self::Rebuild => &[ProvisionState::Deploying],
            Self::Undeploy => &[ProvisionState::Deleting, ProvisionState::Cleaning],
        }
    }

    /// Whether the verb runs deploy steps.
    pub fn deploys(self) -> bool {
        matches!(self, Self::Deploy | Self::Rebuild)
    }
}

/// One provision action: `verb` takes the node from `before` to `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub verb: Verb,
    pub before: ProvisionState,
    pub after: ProvisionState,
}

/// The verbs allowed from a resting state, with where each leads.
fn moves(state: ProvisionState) -> &'static [(Verb, ProvisionState)] {
    use ProvisionState::*;
    match state {
        Enroll => &[(Verb::Manage, Manageable)],
        Manageable => &[(Verb::Provide, Available)],
        Available => &[(Verb::Deploy, Active), (Verb::Manage, Manageable)],
        Active => &[(Verb::Undeploy, Available)],
        DeployFailed => &[(Verb::Deploy, Active), (Verb::Undeploy, Available)],
        Error => &[(Verb::Rebuild, Active), (Verb::Undeploy, Available)],
        // Transitional states are resolved by `resting` before planning.
        Verifying | Cleaning | Deploying | WaitCallBack | Deleting => &[],
    }
}

/// The state an interrupted action started from: an interrupted run is
/// planned as that action again (the converge engine resumes it at its
/// recorded step).
pub fn resting(state: ProvisionState) -> ProvisionState {
    use ProvisionState::*;
    match state {
        Verifying => Enroll,
        Cleaning => Manageable,
        Deploying | WaitCallBack => Available,
        Deleting => Active,
        other => other,
    }
}

/// The shortest sequence of verbs from `observed` to `desired`; `rebuild`
/// when the node is active with a different instance than declared.
pub fn path(observed: ProvisionState, desired: ProvisionTarget, rebuild: bool) -> Vec<Transition> {
    let start = resting(observed);
    let goal = ProvisionState::from(desired);
    if start == goal {
        if rebuild && goal == ProvisionState::Active {
            return vec![Transition {
                verb: Verb::Rebuild,
                before: start,
                after: goal,
            }];
        }
        return Vec::new();
    }
    // Breadth-first over a graph of a handful of states: the first path
    // found is the shortest, and `moves` lists verbs in a fixed order.
    let mut queue = VecDeque::from([(start, Vec::<Transition>::new())]);
    let mut seen = vec![start];
    while let Some((state, so_far)) = queue.pop_front() {
        for &(verb, next) in moves(state) {
            if seen.contains(&next) {
                continue;
            }
            let mut steps = so_far.clone();
            steps.push(Transition {
                verb,
                before: state,
                after: next,
            });
            if next == goal {
                return steps;
            }
            seen.push(next);
            queue.push_back((next, steps));
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProvisionState as S;
    use ProvisionTarget as T;

    fn verbs(observed: S, desired: T, rebuild: bool) -> Vec<Verb> {
        path(observed, desired, rebuild)
            .iter()
            .map(|t| t.verb)
            .collect()
    }

    #[test]
    fn paths_follow_ironics_state_machine() {
        use Verb::*;
        assert_eq!(
            verbs(S::Enroll, T::Active, false),
            [Manage, Provide, Deploy]
        );
        assert_eq!(verbs(S::Enroll, T::Manageable, false), [Manage]);
        assert_eq!(verbs(S::Manageable, T::Available, false), [Provide]);
        assert_eq!(verbs(S::Active, T::Available, false), [Undeploy]);
        assert_eq!(verbs(S::Active, T::Manageable, false), [Undeploy, Manage]);
        assert_eq!(verbs(S::Available, T::Manageable, false), [Manage]);
        assert_eq!(verbs(S::DeployFailed, T::Active, false), [Deploy]);
        assert_eq!(verbs(S::Error, T::Available, false), [Undeploy]);
        assert_eq!(verbs(S::Active, T::Active, true), [Rebuild]);
        assert!(verbs(S::Active, T::Active, false).is_empty());
        assert_eq!(verbs(S::Deploying, T::Active, false), [Deploy]);
    }
}
