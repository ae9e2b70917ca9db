//! Byte trie over vocabulary pieces, used for the lattice's prefix lookups.

#[derive(Debug, Clone, Default)]
struct Node {
    /// Children sorted by byte for binary search.
    children: Vec<(u8, u32)>,
    value: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Trie {
    nodes: Vec<Node>,
}

impl Trie {
    pub fn new() -> Self {
        Self {
            nodes: vec![Node::default()],
        }
    }

    pub fn insert(&mut self, key: &[u8], value: u32) {
        let mut cur = 0usize;
        for &b in key {
            cur = match self.nodes[cur].children.binary_search_by_key(&b, |c| c.0) {
                Ok(i) => self.nodes[cur].children[i].1 as usize,
                Err(i) => {
                    let next = self.nodes.len();
                    self.nodes.push(Node::default());
                    self.nodes[cur].children.insert(i, (b, next as u32));
                    next
                }
            };
        }
        self.nodes[cur].value = Some(value);
    }

    /// Calls `f(length, value)` for every key that prefixes `input`, shortest first.
    pub fn for_each_prefix(&self, input: &[u8], mut f: impl FnMut(usize, u32)) {
        let mut cur = 0usize;
        for (i, &b) in input.iter().enumerate() {
            let node = &self.nodes[cur];
            match node.children.binary_search_by_key(&b, |c| c.0) {
                Ok(j) => cur = node.children[j].1 as usize,
                Err(_) => return,
            }
            if let Some(v) = self.nodes[cur].value {
                f(i + 1, v);
            }
        }
    }
}
