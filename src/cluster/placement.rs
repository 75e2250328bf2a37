//! Where a node belongs: rendezvous (highest random weight) hashing of its
//! UUID over the live members of its conductor group.
//!
//! Every daemon computes the same answer from the same member list, with no
//! coordination; when a member joins or leaves, only the nodes whose highest
//! weight was (or now is) that member move — about 1/n of them.

/// The member that `node` (its UUID) belongs to, among `members` (host
/// names); `None` when there is none. Ties, which need equal 64-bit weights,
/// go to the smaller host name, so the answer never depends on order.
pub fn place<'a>(node: &str, members: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    members
        .into_iter()
        .map(|m| (weight(m, node), m))
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, m)| m)
}

/// A stable 64-bit weight of (member, node): FNV-1a over both, with a
/// separator so ("ab","c") and ("a","bc") differ, then a finalizer that
/// spreads nearby inputs. Stable across releases on purpose: daemons of two
/// versions during an upgrade must agree on placement.
fn weight(member: &str, node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in member.bytes().chain([0xff]).chain(node.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finalizer.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uuids(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("n{i}").as_bytes())
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn placement_does_not_depend_on_member_order() {
        for u in uuids(200) {
            assert_eq!(place(&u, ["a", "b", "c"]), place(&u, ["c", "a", "b"]));
        }
    }

    #[test]
    fn nodes_spread_evenly_and_a_joining_member_takes_about_a_quarter() {
        let nodes = uuids(3000);
        let three = ["h1", "h2", "h3"];
        let four = ["h1", "h2", "h3", "h4"];
        let mut per = std::collections::BTreeMap::<&str, usize>::new();
        let mut moved = 0;
        for u in &nodes {
            let before = place(u, three).unwrap();
            let after = place(u, four).unwrap();
            *per.entry(before).or_default() += 1;
            if before != after {
                // Only to the new member, never between old ones.
                assert_eq!(after, "h4");
                moved += 1;
            }
        }
        for (m, n) in &per {
            assert!((850..=1150).contains(n), "{m} has {n} of 3000");
        }
        assert!((600..=900).contains(&moved), "{moved} of 3000 moved");
    }

    #[test]
    fn no_members_places_nowhere() {
        assert_eq!(place("x", std::iter::empty()), None);
    }
}
