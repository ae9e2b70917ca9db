//! The decoder's state between steps: self-attention caches, the beam ancestry that lets beam
//! search reorder rows without copying them, and the once-computed cross-attention keys and
//! values.

use candle_core::{DType, Device, Tensor};

use super::{ModelError, Res};

/// Steps added when a cache is full.
pub(crate) const CACHE_STEP: usize = 32;

/// Per-layer self-attention cache: (B, H, capacity, hd) buffers filled in place. Physical
/// row `r` holds what logical row `r` computed at each step; which row's entry a logical row
/// reads at an earlier step is the [`Ancestry`]'s business.
pub(crate) struct KvCache {
    pub(crate) k: Tensor,
    pub(crate) v: Tensor,
    len: usize,
}

impl KvCache {
    pub fn new(
        rows: usize,
        heads: usize,
        head_dim: usize,
        capacity: usize,
        dtype: DType,
        device: &Device,
    ) -> Res<Self> {
        let shape = (rows, heads, capacity.max(1), head_dim);
        Ok(Self {
            k: Tensor::zeros(shape, dtype, device)?,
            v: Tensor::zeros(shape, dtype, device)?,
            len: 0,
        })
    }

    /// Writes one step (B, H, 1, hd) into each row's own slot; returns how many steps are
    /// cached.
    pub fn push(&mut self, k: &Tensor, v: &Tensor) -> Res<usize> {
        let cap = self.k.dim(2)?;
        if self.len == cap {
            self.grow(cap + CACHE_STEP)?;
        }
        let dtype = self.k.dtype();
        self.k.slice_set(&in_dtype(k, dtype)?, 2, self.len)?;
        self.v.slice_set(&in_dtype(v, dtype)?, 2, self.len)?;
        self.len += 1;
        Ok(self.len)
    }

    fn grow(&mut self, cap: usize) -> Res<()> {
        let (b, h, old, hd) = self.k.dims4()?;
        let pad = Tensor::zeros((b, h, cap - old, hd), self.k.dtype(), self.k.device())?;
        self.k = Tensor::cat(&[&self.k, &pad], 2)?;
        self.v = Tensor::cat(&[&self.v, &pad], 2)?;
        Ok(())
    }

    /// New buffers holding, for each of `rows` (physical rows per step, as given by
    /// [`Ancestry::traced_rows`]), its cached steps contiguously in one row.
    pub fn materialise(&mut self, rows: &[&[u32]]) -> Res<()> {
        let cap = self.k.dim(2)?;
        self.k = super::kernels::gather_cache(&self.k, rows, self.len, cap)?;
        self.v = super::kernels::gather_cache(&self.v, rows, self.len, cap)?;
        Ok(())
    }
}

/// `t` (f32) as a cache of `dtype` holds it.
pub(crate) fn in_dtype(t: &Tensor, dtype: DType) -> Res<Tensor> {
    Ok(match dtype {
        DType::F16 if t.device().is_cpu() && t.dtype() == DType::F32 => super::kernels::to_f16(t)?,
        _ => t.to_dtype(dtype)?,
    })
}

/// For each logical decoder row, the physical cache row that holds its key/value at each
/// step. Beam search reorders its rows every step; copying every layer's cache to follow
/// them costs tens of MB of memory traffic per step, so instead each row
/// keeps writing to its own slot and the attention reads step `j` of row `r` from
/// `rows[r][j]`. Rows are materialised (copied once) only when rows leave the batch.
pub(crate) struct Ancestry {
    rows: Vec<Vec<u32>>,
}

impl Ancestry {
    pub fn new(rows: usize) -> Self {
        Self {
            rows: vec![Vec::new(); rows],
        }
    }

    /// Physical row per cached step, for each logical row (this step's own entry included
    /// once [`Ancestry::push`] ran).
    pub fn rows(&self) -> &[Vec<u32>] {
        &self.rows
    }

    /// One more step: every row's new entry is in its own slot.
    pub fn push(&mut self) {
        for (r, steps) in self.rows.iter_mut().enumerate() {
            steps.push(r as u32);
        }
    }

    /// Logical row `i` continues logical row `idx[i]` (same row count: no cache copy).
    pub fn reorder(&mut self, idx: &[u32]) -> Res<()> {
        self.check(idx)?;
        self.rows = idx.iter().map(|&i| self.rows[i as usize].clone()).collect();
        Ok(())
    }

    /// Per kept row, where its steps are now; the caller materialises the caches with these
    /// and then calls [`Ancestry::reset`].
    pub fn traced_rows(&self, idx: &[u32]) -> Res<Vec<&[u32]>> {
        self.check(idx)?;
        Ok(idx
            .iter()
            .map(|&i| self.rows[i as usize].as_slice())
            .collect())
    }

    /// After materialising: row `r` holds all its steps in slot `r`.
    pub fn reset(&mut self, rows: usize, steps: usize) {
        self.rows = (0..rows as u32).map(|r| vec![r; steps]).collect();
    }

    fn check(&self, idx: &[u32]) -> Res<()> {
        match idx.iter().find(|&&i| i as usize >= self.rows.len()) {
            Some(i) => Err(ModelError::Input(format!(
                "row {i} out of range (decoder has {} rows)",
                self.rows.len()
            ))),
            None => Ok(()),
        }
    }
}

/// Per-batch decoder state: self-attention caches and the once-computed cross K/V.
/// Decoder rows come in groups of `group` (the beams of one input) that share one source:
/// cross K/V and the source mask are kept once per input, not per row.
pub(crate) struct DecoderState {
    pub(super) self_kv: Vec<KvCache>,
    /// Shared by all layers: beam reordering is the same in each.
    pub(super) ancestry: Ancestry,
    pub(super) cross_kv: Vec<(Tensor, Tensor)>,
    /// Additive source padding mask (inputs, 1, 1, S).
    pub(super) cross_mask: Tensor,
    pub(super) group: usize,
    pub rows: usize,
    pub pos: usize,
    /// When recording: the last step's last-layer cross-attention averaged over heads,
    /// (rows, padded source length) row-major. See [`DecoderState::record_alignment`].
    pub(super) alignment: Option<Vec<f32>>,
}

impl DecoderState {
    /// From the next step on, keep each step's cross-attention for [`Self::step_alignment`].
    pub fn record_alignment(&mut self) {
        self.alignment.get_or_insert_with(Vec::new);
    }

    /// The last step's alignment rows and their width (the padded source length), when
    /// recording.
    pub fn step_alignment(&self) -> Res<Option<(&[f32], usize)>> {
        let width = self.cross_mask.dim(3)?;
        Ok(self.alignment.as_deref().map(|a| (a, width)))
    }

    /// Keeps the given rows in the given order (beam reorder, dropping finished rows). Rows
    /// must stay grouped by input: `rows[g*group..(g+1)*group]` all come from one input.
    pub fn select_rows(&mut self, rows: &[u32]) -> Res<()> {
        let fused = self
            .self_kv
            .first()
            .is_none_or(|c| super::kernels::fused_cache(&c.k));
        if rows.len() == self.rows && fused {
            // Beam reorder: the fused attention follows the ancestry, nothing is copied.
            self.ancestry.reorder(rows)?;
        } else {
            let traced = self.ancestry.traced_rows(rows)?;
            for c in &mut self.self_kv {
                c.materialise(&traced)?;
            }
            self.ancestry.reset(rows.len(), self.pos);
        }
        let group = self.group as u32;
        let inputs: Vec<u32> = rows.chunks(self.group).map(|c| c[0] / group).collect();
        let before = self.cross_mask.dim(0)?;
        if inputs.len() != before || inputs.iter().enumerate().any(|(i, &r)| i as u32 != r) {
            let idx = Tensor::new(inputs.as_slice(), self.cross_mask.device())?;
            for (k, v) in &mut self.cross_kv {
                *k = k.index_select(&idx, 0)?;
                *v = v.index_select(&idx, 0)?;
            }
            self.cross_mask = self.cross_mask.index_select(&idx, 0)?;
        }
        self.rows = rows.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reorder_follows_parents_and_new_steps_stay_in_own_slot() {
        let mut a = Ancestry::new(3);
        a.push();
        a.reorder(&[2, 2, 0]).unwrap();
        a.push();
        assert_eq!(a.rows(), &[vec![2, 0], vec![2, 1], vec![0, 2]]);
        a.reorder(&[1, 0, 0]).unwrap();
        a.push();
        assert_eq!(a.rows(), &[vec![2, 1, 0], vec![2, 0, 1], vec![2, 0, 2]]);
        assert!(a.reorder(&[3, 0, 0]).is_err());
    }

    #[test]
    fn materialised_rows_hold_their_history() {
        // The int8 engine's caches are f16: the same history (these values are exact in f16).
        for dtype in [DType::F32, DType::F16] {
            materialised_history(dtype);
        }
    }

    fn materialised_history(dtype: DType) {
        // Two rows, one head, head dim 1; step j of physical row r holds 10 r + j.
        let dev = Device::Cpu;
        let mut c = KvCache::new(2, 1, 1, 4, dtype, &dev).unwrap();
        let mut a = Ancestry::new(2);
        for j in 0..3 {
            let step = Tensor::new(&[j as f32, 10.0 + j as f32], &dev)
                .unwrap()
                .reshape((2, 1, 1, 1))
                .unwrap();
            c.push(&step, &step).unwrap();
            a.push();
            if j == 0 {
                a.reorder(&[1, 1]).unwrap();
            }
        }
        // Row 0 followed row 1 after step 0, then wrote its own steps 1 and 2.
        let keep = a.traced_rows(&[0]).unwrap();
        assert_eq!(keep, vec![&[1u32, 0, 0][..]]);
        c.materialise(&keep).unwrap();
        assert_eq!(c.k.dtype(), dtype);
        let k = c.k.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
        assert_eq!(k.to_vec1::<f32>().unwrap(), vec![10.0, 1.0, 2.0, 0.0]);
    }
}
