//! Weight sources: safetensors / PyTorch zip files, or seeded random weights for benchmarks.
//!
//! Why not `candle_nn::VarBuilder`: files are read with the same candle readers it uses
//! (`safetensors::load`, `pickle::read_all`), and every weight is repacked at load into the
//! kernels' own layouts (f32 panels, int8 rows), so what VarBuilder would add is memory
//! mapping. Measured on a 181 MB safetensors file of opus-mt-ar-en's shapes (2 + 2 layers),
//! reading every tensor to f32 and repacking it, two runs each: read whole 768–809 ms, peak
//! RSS +362 MiB; VarBuilder mmap 364–505 ms, peak RSS +375–425 MiB. Mapping saves a few
//! tenths of a second per model and no memory (mapped pages count as resident while they are
//! repacked), and it needs `unsafe` whose contract we cannot check: the file must not change
//! while mapped, and a hub cache can be rewritten under a running server. The
//! [`WeightSource`] trait stays the one seam where files, seeded random weights and the int8
//! quantisation meet.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::{ComputeType, ModelError};

/// Where layer constructors get their tensors from.
pub(crate) trait WeightSource {
    /// A tensor that must exist with exactly `shape`.
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, ModelError>;
    /// A tensor that may be absent; present with another shape is an error.
    fn get_opt(&mut self, name: &str, shape: &[usize]) -> Result<Option<Tensor>, ModelError>;

    /// The first of `names` that exists (tied embeddings are stored under several names).
    fn first_of(&mut self, names: &[&str], shape: &[usize]) -> Result<Tensor, ModelError> {
        for name in names {
            if let Some(t) = self.get_opt(name, shape)? {
                return Ok(t);
            }
        }
        Err(ModelError::MissingTensor {
            name: names.join(" | "),
        })
    }

    /// What the linear layers built from these tensors compute in.
    fn compute_type(&self) -> ComputeType {
        ComputeType::F32
    }
}

/// Another source's tensors, for layers that compute in `compute`.
pub(crate) struct WithCompute<'a> {
    pub inner: &'a mut dyn WeightSource,
    pub compute: ComputeType,
}

impl WeightSource for WithCompute<'_> {
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, ModelError> {
        self.inner.get(name, shape)
    }

    fn get_opt(&mut self, name: &str, shape: &[usize]) -> Result<Option<Tensor>, ModelError> {
        self.inner.get_opt(name, shape)
    }

    fn compute_type(&self) -> ComputeType {
        self.compute
    }
}

/// All tensors of one weights file, converted to f32 on the target device.
pub(crate) struct FileWeights {
    tensors: HashMap<String, Tensor>,
}

impl FileWeights {
    /// Reads `model.safetensors`-style files by extension `.safetensors`, anything else as a
    /// zip-format PyTorch pickle.
    pub fn read(path: &Path, device: &Device) -> Result<Self, ModelError> {
        let fail = |e: candle_core::Error| ModelError::Weights {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        if !path.is_file() {
            return Err(ModelError::Weights {
                path: path.display().to_string(),
                reason: "no such file".into(),
            });
        }
        let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
        let raw: Vec<(String, Tensor)> = if is_safetensors {
            candle_core::safetensors::load(path, &Device::Cpu)
                .map_err(fail)?
                .into_iter()
                .collect()
        } else {
            candle_core::pickle::read_all(path).map_err(fail)?
        };
        let mut tensors = HashMap::with_capacity(raw.len());
        for (name, t) in raw {
            let t = t.to_dtype(DType::F32)?.to_device(device)?;
            tensors.insert(name, t);
        }
        Ok(Self { tensors })
    }
}

impl WeightSource for FileWeights {
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, ModelError> {
        self.get_opt(name, shape)?
            .ok_or_else(|| ModelError::MissingTensor { name: name.into() })
    }

    fn get_opt(&mut self, name: &str, shape: &[usize]) -> Result<Option<Tensor>, ModelError> {
        let Some(t) = self.tensors.get(name) else {
            return Ok(None);
        };
        if t.dims() != shape {
            return Err(ModelError::ShapeMismatch {
                name: name.into(),
                expected: shape.to_vec(),
                got: t.dims().to_vec(),
            });
        }
        Ok(Some(t.clone()))
    }
}

/// Seeded random weights with the right shapes; layer norms start at identity.
pub(crate) struct RandomWeights {
    rng: SplitMix64,
    device: Device,
}

impl RandomWeights {
    pub fn new(seed: u64, device: &Device) -> Self {
        Self {
            rng: SplitMix64(seed),
            device: device.clone(),
        }
    }
}

impl WeightSource for RandomWeights {
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, ModelError> {
        let n: usize = shape.iter().product();
        let is_norm = name.contains("layer_norm") || name.contains("layernorm");
        let data: Vec<f32> = if is_norm && name.ends_with(".weight") {
            vec![1.0; n]
        } else if is_norm || name == "final_logits_bias" {
            vec![0.0; n]
        } else {
            // Uniform with std 0.02, like transformers' init_std.
            let a = 0.02 * 3f32.sqrt();
            (0..n)
                .map(|_| (self.rng.next_f32() * 2.0 - 1.0) * a)
                .collect()
        };
        Ok(Tensor::from_vec(data, shape, &self.device)?)
    }

    fn get_opt(&mut self, name: &str, shape: &[usize]) -> Result<Option<Tensor>, ModelError> {
        // Optional tensors with a computed fallback (sinusoidal tables) are left to it; the
        // tied embedding is served under its first name only.
        if name.contains("embed_positions") {
            return Ok(None);
        }
        if name.contains("embed_tokens") || name == "lm_head.weight" {
            return Ok(None);
        }
        self.get(name, shape).map(Some)
    }
}

/// Small deterministic generator; good enough for benchmark weights and token ids.
pub(crate) struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Marian's static sinusoidal table: first half sin, second half cos, computed in f64 like
/// transformers' `MarianSinusoidalPositionalEmbedding`, then rounded to f32.
pub fn sinusoidal_positions(n_positions: usize, dim: usize) -> Vec<f32> {
    let half = dim.div_ceil(2);
    let mut out = vec![0f32; n_positions * dim];
    for pos in 0..n_positions {
        let row = &mut out[pos * dim..(pos + 1) * dim];
        for j in 0..dim {
            let angle = pos as f64 / 10000f64.powf((2 * (j / 2)) as f64 / dim as f64);
            if j % 2 == 0 {
                row[j / 2] = angle.sin() as f32;
            } else {
                row[half + j / 2] = angle.cos() as f32;
            }
        }
    }
    out
}
