//! The boot flags of the two slots as a plain value, and the pure functions that change them.
//!
//! Every bootloader backend only reads and writes a [`BootFlags`]; what an install, a boot, a commit or a
//! rollback does to the flags is decided here, once, and tested exhaustively.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One of the two slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub const BOTH: [Slot; 2] = [Slot::A, Slot::B];

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// `A` or `B`, as bootloader variables spell it.
    pub fn letter(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }

    /// `a` or `b`, as directories are named.
    pub fn lower(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    pub fn parse(s: &str) -> Option<Slot> {
        match s.trim() {
            "A" | "a" | "0" | "_a" => Some(Slot::A),
            "B" | "b" | "1" | "_b" => Some(Slot::B),
            _ => None,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.letter())
    }
}

/// What the bootloader knows about one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SlotFlags {
    /// Holds a complete, verified system. Cleared before a slot is written.
    pub bootable: bool,
    /// Boots left before the bootloader gives up on an unproven slot.
    pub tries_left: u8,
    /// Passed the health gate: boots without spending tries.
    pub successful: bool,
}

/// Both slots' flags and which one the bootloader tries first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootFlags {
    pub primary: Slot,
    pub a: SlotFlags,
    pub b: SlotFlags,
}

impl BootFlags {
    /// A freshly flashed box: `slot` holds the factory system, the other slot is empty.
    pub fn factory(slot: Slot) -> Self {
        let good = SlotFlags { bootable: true, tries_left: 0, successful: true };
        let empty = SlotFlags::default();
        match slot {
            Slot::A => Self { primary: Slot::A, a: good, b: empty },
            Slot::B => Self { primary: Slot::B, a: empty, b: good },
        }
    }

    pub fn get(&self, slot: Slot) -> SlotFlags {
        match slot {
            Slot::A => self.a,
            Slot::B => self.b,
        }
    }

    fn get_mut(&mut self, slot: Slot) -> &mut SlotFlags {
        match slot {
            Slot::A => &mut self.a,
            Slot::B => &mut self.b,
        }
    }

    /// Whether the bootloader may choose `slot`: complete, and either proven or with tries left.
    pub fn can_boot(&self, slot: Slot) -> bool {
        let f = self.get(slot);
        f.bootable && (f.successful || f.tries_left > 0)
    }

    /// The slot the bootloader will choose: the primary when it can boot, else the other one.
    pub fn will_boot(&self) -> Option<Slot> {
        [self.primary, self.primary.other()].into_iter().find(|s| self.can_boot(*s))
    }

    /// What the bootloader does at power-on: choose a slot, and spend one try if it is unproven.
    pub fn boot(mut self) -> (Self, Option<Slot>) {
        let chosen = self.will_boot();
        if let Some(s) = chosen {
            let f = self.get_mut(s);
            if !f.successful {
                f.tries_left -= 1;
            }
        }
        (self, chosen)
    }

    /// Before a slot is written: it must never be chosen while it holds a partial image.
    pub fn begin_install(mut self, target: Slot) -> Self {
        *self.get_mut(target) = SlotFlags::default();
        if self.primary == target {
            self.primary = target.other();
        }
        self
    }

    /// After the whole image was written and verified: boot it next, `tries` times at most.
    pub fn finish_install(mut self, target: Slot, tries: u8) -> Self {
        *self.get_mut(target) = SlotFlags { bootable: true, tries_left: tries, successful: false };
        self.primary = target;
        self
    }

    /// The health gate passed on `slot`: it is the one to boot from now on.
    pub fn mark_good(mut self, slot: Slot) -> Self {
        let f = self.get_mut(slot);
        f.successful = true;
        f.bootable = true;
        self.primary = slot;
        self
    }

    /// `slot` failed: never boot it again until reinstalled; the other slot becomes primary.
    pub fn mark_bad(mut self, slot: Slot) -> Self {
        *self.get_mut(slot) = SlotFlags::default();
        self.primary = slot.other();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_flags() -> Vec<BootFlags> {
        let mut out = Vec::new();
        let singles: Vec<SlotFlags> = [false, true]
            .into_iter()
            .flat_map(|bootable| {
                [false, true].into_iter().flat_map(move |successful| (0..=3).map(move |tries_left| SlotFlags { bootable, tries_left, successful }))
            })
            .collect();
        for primary in Slot::BOTH {
            for a in &singles {
                for b in &singles {
                    out.push(BootFlags { primary, a: *a, b: *b });
                }
            }
        }
        out
    }

    #[test]
    fn factory_boots_its_slot_forever() {
        for s in Slot::BOTH {
            let mut f = BootFlags::factory(s);
            for _ in 0..10 {
                let (next, chosen) = f.boot();
                assert_eq!(chosen, Some(s));
                f = next;
            }
            assert!(!f.can_boot(s.other()));
        }
    }

    #[test]
    fn begin_install_never_leaves_the_target_bootable_and_keeps_the_other() {
        for f in all_flags() {
            for t in Slot::BOTH {
                let g = f.begin_install(t);
                assert_eq!(g.get(t), SlotFlags::default());
                assert_eq!(g.get(t.other()), f.get(t.other()), "the other slot is untouched");
                assert_ne!(g.will_boot(), Some(t));
                assert_eq!(g.primary, t.other());
            }
        }
    }

    #[test]
    fn finish_install_boots_the_new_slot_exactly_tries_times_then_falls_back() {
        for tries in 1..=3u8 {
            let mut f = BootFlags::factory(Slot::A).begin_install(Slot::B).finish_install(Slot::B, tries);
            assert_eq!(f.b, SlotFlags { bootable: true, tries_left: tries, successful: false });
            for _ in 0..tries {
                let (next, chosen) = f.boot();
                assert_eq!(chosen, Some(Slot::B));
                f = next;
            }
            let (_, chosen) = f.boot();
            assert_eq!(chosen, Some(Slot::A), "tries used up: back to the proven slot");
        }
    }

    #[test]
    fn mark_good_stops_spending_tries() {
        let f = BootFlags::factory(Slot::A).finish_install(Slot::B, 1);
        let (f, chosen) = f.boot();
        assert_eq!(chosen, Some(Slot::B));
        let mut f = f.mark_good(Slot::B);
        assert_eq!(f.primary, Slot::B);
        for _ in 0..5 {
            let (next, chosen) = f.boot();
            assert_eq!(chosen, Some(Slot::B));
            f = next;
        }
    }

    #[test]
    fn mark_bad_makes_the_other_slot_primary() {
        for f in all_flags() {
            for s in Slot::BOTH {
                let g = f.mark_bad(s);
                assert!(!g.can_boot(s));
                assert_eq!(g.primary, s.other());
                assert_eq!(g.get(s.other()), f.get(s.other()));
            }
        }
    }

    #[test]
    fn boot_spends_a_try_only_on_unproven_slots_and_never_underflows() {
        for f in all_flags() {
            let (g, chosen) = f.boot();
            assert_eq!(chosen, f.will_boot());
            match chosen {
                None => assert_eq!(g, f),
                Some(s) => {
                    let (before, after) = (f.get(s), g.get(s));
                    if before.successful {
                        assert_eq!(before, after);
                    } else {
                        assert_eq!(after.tries_left + 1, before.tries_left);
                    }
                    assert_eq!(g.get(s.other()), f.get(s.other()));
                    assert_eq!(g.primary, f.primary, "booting never reorders");
                }
            }
        }
    }

    #[test]
    fn will_boot_prefers_primary_and_never_picks_an_unbootable_slot() {
        for f in all_flags() {
            match f.will_boot() {
                Some(s) => {
                    assert!(f.get(s).bootable);
                    if s != f.primary {
                        assert!(!f.can_boot(f.primary));
                    }
                }
                None => assert!(!f.can_boot(Slot::A) && !f.can_boot(Slot::B)),
            }
        }
    }

    #[test]
    fn slot_names_parse() {
        for (s, slot) in [("A", Slot::A), ("b", Slot::B), ("0", Slot::A), ("1", Slot::B), ("_b", Slot::B)] {
            assert_eq!(Slot::parse(s), Some(slot));
        }
        assert_eq!(Slot::parse("c"), None);
    }
}
