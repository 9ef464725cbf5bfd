//! Two small open-addressing hash tables for the vocabulary: strings with dense ids, and id pairs
//! (BPE merges).
//!
//! They exist for load time: a 262k-token vocabulary with half a million merges fills them in a
//! fraction of what `HashMap` needs in an unoptimised (test) build, and the string table keeps
//! each text once (the ids are the keys' positions in its list).

const EMPTY: u32 = u32::MAX;

fn fnv(h: u64, bytes: &[u8]) -> u64 {
    let mut h = h;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// The hash of `a + b`, mixed so its low bits (the slot) and high bits (the tag) both vary.
fn hash2(a: &[u8], b: &[u8]) -> u64 {
    let h = fnv(fnv(FNV_START, a), b);
    (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9)
}

/// Distinct strings, each with its index as id, and lookup by text.
#[derive(Default)]
pub(super) struct Strings {
    list: Vec<String>,
    /// `(id, hash tag)`, id `EMPTY` where free; a power-of-two length at most half full.
    slots: Vec<(u32, u32)>,
}

impl Strings {
    pub fn with_capacity(n: usize) -> Strings {
        Strings {
            list: Vec::with_capacity(n),
            slots: vec![(EMPTY, 0); (2 * n).next_power_of_two().max(16)],
        }
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn list(&self) -> &[String] {
        &self.list
    }

    pub fn get(&self, s: &str) -> Option<u32> {
        self.get2(s, "")
    }

    /// The id of the concatenation `a + b`, without building it.
    pub fn get2(&self, a: &str, b: &str) -> Option<u32> {
        match self.find(a.as_bytes(), b.as_bytes()) {
            (_, Some(id)) => Some(id),
            _ => None,
        }
    }

    /// Adds `s` and returns its new id, or returns `Err` with the id it already has.
    pub fn insert(&mut self, s: &str) -> Result<u32, u32> {
        self.insert2(s, "")
    }

    /// [`insert`](Self::insert) of `a + b`.
    pub fn insert2(&mut self, a: &str, b: &str) -> Result<u32, u32> {
        if self.slots.is_empty() || 2 * (self.list.len() + 1) > self.slots.len() {
            self.grow();
        }
        let (slot, found) = self.find(a.as_bytes(), b.as_bytes());
        if let Some(id) = found {
            return Err(id);
        }
        let id = self.list.len() as u32;
        let mut s = String::with_capacity(a.len() + b.len());
        s.push_str(a);
        s.push_str(b);
        self.list.push(s);
        self.slots[slot] = (id, (hash2(a.as_bytes(), b.as_bytes()) >> 32) as u32);
        Ok(id)
    }

    /// The slot holding `a + b`, or the free slot where it would go.
    fn find(&self, a: &[u8], b: &[u8]) -> (usize, Option<u32>) {
        if self.slots.is_empty() {
            return (0, None);
        }
        let mask = self.slots.len() - 1;
        let h = hash2(a, b);
        let tag = (h >> 32) as u32;
        let mut i = h as usize & mask;
        loop {
            let (id, t) = self.slots[i];
            if id == EMPTY {
                return (i, None);
            }
            if t == tag {
                let s = self.list[id as usize].as_bytes();
                if s.len() == a.len() + b.len() && &s[..a.len()] == a && &s[a.len()..] == b {
                    return (i, Some(id));
                }
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let size = (2 * self.slots.len()).max(16);
        self.slots = vec![(EMPTY, 0); size];
        let mask = size - 1;
        for (id, s) in self.list.iter().enumerate() {
            let h = hash2(s.as_bytes(), b"");
            let mut i = h as usize & mask;
            while self.slots[i].0 != EMPTY {
                i = (i + 1) & mask;
            }
            self.slots[i] = (id as u32, (h >> 32) as u32);
        }
    }
}

/// A map from id pairs to `(u32, u32)` values.
pub(super) struct PairMap {
    /// `left << 32 | right`, `u64::MAX` where free.
    keys: Vec<u64>,
    values: Vec<(u32, u32)>,
    len: usize,
}

impl PairMap {
    pub fn with_capacity(n: usize) -> PairMap {
        let size = (2 * n).next_power_of_two().max(16);
        PairMap {
            keys: vec![u64::MAX; size],
            values: vec![(0, 0); size],
            len: 0,
        }
    }

    fn slot(&self, key: u64) -> (usize, bool) {
        let mask = self.keys.len() - 1;
        let mut i = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 24) as usize & mask;
        loop {
            let k = self.keys[i];
            if k == key {
                return (i, true);
            }
            if k == u64::MAX {
                return (i, false);
            }
            i = (i + 1) & mask;
        }
    }

    pub fn get(&self, left: u32, right: u32) -> Option<(u32, u32)> {
        match self.slot((left as u64) << 32 | right as u64) {
            (i, true) => Some(self.values[i]),
            _ => None,
        }
    }

    /// Sets the value of a pair that has none yet (a later value for the same pair is ignored).
    pub fn insert_first(&mut self, left: u32, right: u32, value: (u32, u32)) {
        if 2 * (self.len + 1) > self.keys.len() {
            let size = 2 * self.keys.len();
            let old_keys = std::mem::replace(&mut self.keys, vec![u64::MAX; size]);
            let old_values = std::mem::replace(&mut self.values, vec![(0, 0); size]);
            for (k, v) in old_keys.into_iter().zip(old_values) {
                if k != u64::MAX {
                    let (i, _) = self.slot(k);
                    self.keys[i] = k;
                    self.values[i] = v;
                }
            }
        }
        let key = (left as u64) << 32 | right as u64;
        if let (i, false) = self.slot(key) {
            self.keys[i] = key;
            self.values[i] = value;
            self.len += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings() {
        let mut s = Strings::default();
        assert_eq!(s.insert("ab"), Ok(0));
        assert_eq!(s.insert2("a", "b"), Err(0));
        for i in 0..100 {
            assert_eq!(s.insert(&i.to_string()), Ok(i + 1));
        }
        assert_eq!(s.get("ab"), Some(0));
        assert_eq!(s.get2("9", "9"), Some(100));
        assert_eq!(s.get("x"), None);
        assert_eq!(s.len(), 101);
    }

    #[test]
    fn pairs() {
        let mut m = PairMap::with_capacity(0);
        for i in 0..100 {
            m.insert_first(i, i + 1, (i, 7));
        }
        m.insert_first(3, 4, (99, 99));
        assert_eq!(m.get(3, 4), Some((3, 7)));
        assert_eq!(m.get(4, 3), None);
    }
}
