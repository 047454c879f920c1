//! The prefix cache: pure data structure, no I/O, no clock.
//!
//! A prompt is cut into full blocks of [`BLOCK_SIZE`] tokens. Block `i`'s hash covers its tokens
//! *and* block `i-1`'s hash (FNV-1a with a fixed seed, optionally salted by `cache_salt`), so a
//! hash names a whole prefix. The cache holds up to `capacity` block hashes and evicts the least
//! recently used one.
//!
//! A request's cached tokens are the longest run of its leading blocks present in the cache, but
//! never the whole prompt: like vLLM, the last prompt token is always recomputed, so at most
//! `(prompt_len - 1) / BLOCK_SIZE` blocks can hit.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::config::BLOCK_SIZE;
use super::tokenizer::fnv1a;

/// Hash of one block, chained over all the blocks before it.
pub type BlockHash = u64;

const ROOT_HASH: u64 = 0x005e_ed0f_b10c_5eed;
const NIL: usize = usize::MAX;

/// Hashes of the full blocks of `tokens`, each chained on the previous one.
pub fn block_hashes(tokens: &[u32], salt: Option<&str>) -> Vec<BlockHash> {
    let mut prev = match salt {
        Some(salt) => fnv1a(salt.as_bytes()) ^ ROOT_HASH,
        None => ROOT_HASH,
    };
    let mut bytes = [0u8; 8 + 4 * BLOCK_SIZE as usize];
    tokens
        .chunks_exact(BLOCK_SIZE as usize)
        .map(|block| {
            bytes[..8].copy_from_slice(&prev.to_le_bytes());
            for (slot, token) in bytes[8..].chunks_exact_mut(4).zip(block) {
                slot.copy_from_slice(&token.to_le_bytes());
            }
            prev = fnv1a(&bytes);
            prev
        })
        .collect()
}

/// Most blocks of a `prompt_len`-token prompt that may come from the cache.
pub fn max_cacheable_blocks(prompt_len: u32) -> usize {
    (prompt_len.saturating_sub(1) / BLOCK_SIZE) as usize
}

/// Block hashes are already well mixed; hashing them again would only cost time.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Debug, Clone, Copy)]
struct Node {
    hash: BlockHash,
    /// Towards the most recently used end.
    newer: usize,
    /// Towards the least recently used end.
    older: usize,
}

/// LRU set of block hashes with a fixed capacity (a capacity of 0 caches nothing).
pub struct PrefixCache {
    capacity: usize,
    index: HashMap<BlockHash, usize, BuildHasherDefault<PassThrough>>,
    nodes: Vec<Node>,
    /// Most recently used node.
    newest: usize,
    /// Least recently used node, evicted first.
    oldest: usize,
}

impl std::fmt::Debug for PrefixCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl PrefixCache {
    pub fn new(capacity_blocks: u32) -> Self {
        let capacity = capacity_blocks as usize;
        Self {
            capacity,
            index: HashMap::with_capacity_and_hasher(capacity.min(1 << 20), Default::default()),
            nodes: Vec::with_capacity(capacity.min(1 << 20)),
            newest: NIL,
            oldest: NIL,
        }
    }

    /// A cache that never hits (`--disable-prefix-caching`).
    pub fn disabled() -> Self {
        Self::new(0)
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn contains(&self, hash: BlockHash) -> bool {
        self.index.contains_key(&hash)
    }

    /// Tokens of a `prompt_len`-token prompt with these block hashes that the cache already holds.
    pub fn cached_tokens(&self, hashes: &[BlockHash], prompt_len: u32) -> u32 {
        let limit = max_cacheable_blocks(prompt_len).min(hashes.len());
        let hits = hashes[..limit]
            .iter()
            .take_while(|h| self.index.contains_key(h))
            .count();
        // hits <= prompt_len / BLOCK_SIZE, so this cannot overflow.
        hits as u32 * BLOCK_SIZE
    }

    /// Insert (or refresh) the blocks of a prefilled prompt, oldest block first so that the
    /// prompt's tail is evicted before its head.
    pub fn insert(&mut self, hashes: &[BlockHash]) {
        if self.capacity == 0 {
            return;
        }
        for &hash in hashes {
            self.touch(hash);
        }
    }

    fn touch(&mut self, hash: BlockHash) {
        if let Some(&slot) = self.index.get(&hash) {
            self.unlink(slot);
            self.push_newest(slot);
            return;
        }
        let slot = if self.index.len() >= self.capacity {
            let victim = self.oldest;
            self.unlink(victim);
            self.index.remove(&self.nodes[victim].hash);
            self.nodes[victim].hash = hash;
            victim
        } else {
            self.nodes.push(Node {
                hash,
                newer: NIL,
                older: NIL,
            });
            self.nodes.len() - 1
        };
        self.index.insert(hash, slot);
        self.push_newest(slot);
    }

    fn unlink(&mut self, slot: usize) {
        let Node { newer, older, .. } = self.nodes[slot];
        if newer == NIL {
            self.newest = older;
        } else {
            self.nodes[newer].older = older;
        }
        if older == NIL {
            self.oldest = newer;
        } else {
            self.nodes[older].newer = newer;
        }
    }

    fn push_newest(&mut self, slot: usize) {
        self.nodes[slot].older = self.newest;
        self.nodes[slot].newer = NIL;
        if self.newest == NIL {
            self.oldest = slot;
        } else {
            self.nodes[self.newest].newer = slot;
        }
        self.newest = slot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(n: u32, offset: u32) -> Vec<u32> {
        (0..n).map(|i| i + offset).collect()
    }

    #[test]
    fn hashes_chain_over_the_prefix() {
        let a = tokens(48, 0);
        let mut b = a.clone();
        b[0] = 999; // differs only in block 0
        let ha = block_hashes(&a, None);
        let hb = block_hashes(&b, None);
        assert_eq!(ha.len(), 3);
        // Blocks 1 and 2 have identical tokens, but their prefix differs.
        assert!(ha.iter().zip(&hb).all(|(x, y)| x != y));
        assert_eq!(ha, block_hashes(&a, None), "deterministic");
        assert_eq!(block_hashes(&a[..47], None).len(), 2, "partial blocks are not hashed");
        assert_ne!(ha, block_hashes(&a, Some("salt")));
    }

    #[test]
    fn longest_leading_run_hits() {
        let mut cache = PrefixCache::new(100);
        let p = tokens(64, 0);
        let h = block_hashes(&p, None);
        assert_eq!(cache.cached_tokens(&h, 65), 0);
        cache.insert(&h[..2]);
        assert_eq!(cache.cached_tokens(&h, 65), 32);
        // A gap stops the run even if later blocks are present.
        let mut cache = PrefixCache::new(100);
        cache.insert(&[h[0], h[2], h[3]]);
        assert_eq!(cache.cached_tokens(&h, 65), 16);
    }

    #[test]
    fn last_token_is_always_recomputed() {
        let mut cache = PrefixCache::new(100);
        let p = tokens(32, 0);
        let h = block_hashes(&p, None);
        cache.insert(&h);
        // 32 tokens = 2 full blocks, but the last token must be recomputed: only block 0 hits.
        assert_eq!(cache.cached_tokens(&h, 32), 16);
        assert_eq!(cache.cached_tokens(&h, 33), 32);
        assert_eq!(cache.cached_tokens(&h[..1], 16), 0);
        assert_eq!(max_cacheable_blocks(1), 0);
        assert_eq!(max_cacheable_blocks(0), 0);
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut cache = PrefixCache::new(3);
        cache.insert(&[1, 2, 3]);
        cache.insert(&[1]); // refresh 1: now 2 is the oldest
        cache.insert(&[4]);
        assert!(!cache.contains(2));
        assert!(cache.contains(1) && cache.contains(3) && cache.contains(4));
        assert_eq!(cache.len(), 3);
        cache.insert(&[5, 6]);
        assert!(!cache.contains(3) && !cache.contains(1));
        assert!(cache.contains(4) && cache.contains(5) && cache.contains(6));
    }

    #[test]
    fn capacity_one_and_reinsert() {
        let mut cache = PrefixCache::new(1);
        cache.insert(&[7, 8, 7]);
        assert!(cache.contains(7) && !cache.contains(8));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn disabled_cache_never_hits() {
        let mut cache = PrefixCache::disabled();
        let h = block_hashes(&tokens(64, 0), None);
        cache.insert(&h);
        assert!(cache.is_empty());
        assert_eq!(cache.cached_tokens(&h, 64), 0);
    }
}
