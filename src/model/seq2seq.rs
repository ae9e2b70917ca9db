//! The encoder-decoder model: loading, encoder pass, cached decoder steps.

use std::path::Path;

use candle_core::{Device, Tensor};

use super::config::{GenerationParams, ModelConfig};
use super::kv_cache::{in_dtype, Ancestry, DecoderState, KvCache};
use super::layers::{
    residual, round_to, CrossAttention, FeedForward, LayerNorm, Linear, SelfAttention,
};
use super::weights::{sinusoidal_positions, FileWeights, RandomWeights, WeightSource, WithCompute};
use super::{ComputeType, ModelError, Res};

/// Token + position embeddings of one side.
struct Embeddings {
    /// Rows = positions; BART's learned table keeps its offset-2 rows.
    positions: Tensor,
    position_offset: usize,
    scale: f64,
    norm: Option<LayerNorm>,
}

impl Embeddings {
    fn load(
        ws: &mut dyn WeightSource,
        cfg: &ModelConfig,
        side: &str,
        device: &Device,
    ) -> Res<Self> {
        let (d, n) = (cfg.d_model, cfg.max_position_embeddings);
        let name = format!("model.{side}.embed_positions.weight");
        let (positions, position_offset) = if cfg.static_position_embeddings {
            let t = match ws.get_opt(&name, &[n, d])? {
                Some(t) => t,
                None => Tensor::from_vec(sinusoidal_positions(n, d), (n, d), device)?,
            };
            (t, 0)
        } else {
            (ws.get(&name, &[n + 2, d])?, 2)
        };
        let norm = if cfg.normalize_embedding {
            Some(LayerNorm::load(
                ws,
                &format!("model.{side}.layernorm_embedding"),
                d,
            )?)
        } else {
            None
        };
        let scale = if cfg.scale_embedding {
            (d as f64).sqrt()
        } else {
            1.0
        };
        Ok(Self {
            positions,
            position_offset,
            scale,
            norm,
        })
    }

    fn max_positions(&self) -> usize {
        self.positions.dims()[0] - self.position_offset
    }

    /// `tokens` (B, T) embedded at positions start..start+T -> (B, T, d).
    fn forward(&self, table: &Linear, tokens: &Tensor, start: usize) -> Res<Tensor> {
        let (b, t) = tokens.dims2()?;
        let x = table.weight_rows(&tokens.flatten_all()?)?;
        let d = x.dim(1)?;
        let x = x.reshape((b, t, d))?;
        let x = if self.scale != 1.0 {
            (x * self.scale)?
        } else {
            x
        };
        let pos = self.positions.narrow(0, start + self.position_offset, t)?;
        let x = x.broadcast_add(&pos)?;
        match &self.norm {
            Some(n) => n.forward(&x),
            None => Ok(x),
        }
    }
}

struct EncoderLayer {
    attn: SelfAttention,
    attn_norm: LayerNorm,
    ffn: FeedForward,
    ffn_norm: LayerNorm,
}

struct DecoderLayer {
    attn: SelfAttention,
    attn_norm: LayerNorm,
    cross: CrossAttention,
    cross_norm: LayerNorm,
    ffn: FeedForward,
    ffn_norm: LayerNorm,
}

/// MarianMT / BART encoder-decoder with tied output projection.
pub struct Seq2SeqModel {
    cfg: ModelConfig,
    device: Device,
    /// Tied embedding as the output projection (stored transposed), `final_logits_bias` or zeros.
    lm_head: Linear,
    enc_emb: Embeddings,
    dec_emb: Embeddings,
    encoder: Vec<EncoderLayer>,
    decoder: Vec<DecoderLayer>,
    enc_final_norm: Option<LayerNorm>,
    dec_final_norm: Option<LayerNorm>,
    compute: ComputeType,
}

impl Seq2SeqModel {
    /// Loads `config.json` (+ `generation_config.json`) and `model.safetensors`, else
    /// `pytorch_model.bin`, from `dir`.
    pub fn load(dir: &Path, device: &Device) -> Res<Self> {
        Self::load_as(dir, device, ComputeType::F32)
    }

    /// As [`Self::load`], the linear layers computing in `compute`.
    pub fn load_as(dir: &Path, device: &Device, compute: ComputeType) -> Res<Self> {
        let st = dir.join("model.safetensors");
        let pt = dir.join("pytorch_model.bin");
        let file = if st.is_file() {
            st
        } else if pt.is_file() {
            pt
        } else {
            return Err(ModelError::NoWeights(dir.display().to_string()));
        };
        let cfg = ModelConfig::from_dir(dir)?;
        let mut ws = FileWeights::read(&file, device)?;
        Self::build(cfg, &mut ws, device, compute)
    }

    /// Loads the config from `dir` and the weights from `weights_file`.
    pub fn load_with_weights(dir: &Path, weights_file: &Path, device: &Device) -> Res<Self> {
        let cfg = ModelConfig::from_dir(dir)?;
        let mut ws = FileWeights::read(weights_file, device)?;
        Self::build(cfg, &mut ws, device, ComputeType::F32)
    }

    /// Seeded random weights with the config's shapes (benchmarks).
    pub fn random(config: ModelConfig, seed: u64, device: &Device) -> Res<Self> {
        Self::random_as(config, seed, device, ComputeType::F32)
    }

    /// As [`Self::random`], the linear layers computing in `compute`.
    pub fn random_as(
        config: ModelConfig,
        seed: u64,
        device: &Device,
        compute: ComputeType,
    ) -> Res<Self> {
        let mut ws = RandomWeights::new(seed, device);
        Self::build(config, &mut ws, device, compute)
    }

    fn build(
        cfg: ModelConfig,
        ws: &mut dyn WeightSource,
        device: &Device,
        compute: ComputeType,
    ) -> Res<Self> {
        let ws = &mut WithCompute { inner: ws, compute };
        let (d, v) = (cfg.d_model, cfg.vocab_size);
        let emb = ws.first_of(
            &[
                "model.shared.weight",
                "model.encoder.embed_tokens.weight",
                "model.decoder.embed_tokens.weight",
                "lm_head.weight",
            ],
            &[v, d],
        )?;
        if !cfg.tie_word_embeddings {
            return Err(ModelError::Config(
                "untied output projection (tie_word_embeddings=false) is not supported".into(),
            ));
        }
        let final_logits_bias = ws.get_opt("final_logits_bias", &[1, v])?;
        let enc_emb = Embeddings::load(ws, &cfg, "encoder", device)?;
        let dec_emb = Embeddings::load(ws, &cfg, "decoder", device)?;
        let encoder = (0..cfg.encoder_layers)
            .map(|i| load_encoder_layer(ws, &cfg, i))
            .collect::<Res<Vec<_>>>()?;
        let decoder = (0..cfg.decoder_layers)
            .map(|i| load_decoder_layer(ws, &cfg, i))
            .collect::<Res<Vec<_>>>()?;
        let (enc_final_norm, dec_final_norm) = if cfg.add_final_layer_norm {
            (
                Some(LayerNorm::load(ws, "model.encoder.layer_norm", d)?),
                Some(LayerNorm::load(ws, "model.decoder.layer_norm", d)?),
            )
        } else {
            (None, None)
        };
        let bias = match final_logits_bias {
            Some(b) => b.reshape(v)?,
            None => Tensor::zeros(v, candle_core::DType::F32, device)?,
        };
        Ok(Self {
            lm_head: Linear::tied(&emb, &bias, compute)?,
            cfg,
            device: device.clone(),
            enc_emb,
            dec_emb,
            encoder,
            decoder,
            enc_final_norm,
            dec_final_norm,
            compute,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// What the linear layers compute in.
    pub fn compute_type(&self) -> ComputeType {
        self.compute
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Generation settings from config.json + generation_config.json.
    pub fn generation_defaults(&self) -> GenerationParams {
        self.cfg.generation_defaults()
    }

    /// `task_specific_params.summarization` over the defaults, when the config has it.
    pub fn summarization_defaults(&self) -> Option<GenerationParams> {
        self.cfg.summarization_defaults()
    }

    /// Right-pads `inputs` with pad id; returns ids (B, S) and the additive mask (B, 1, 1, S).
    fn pad_batch(&self, inputs: &[Vec<u32>]) -> Res<(Tensor, Tensor)> {
        let s = inputs.iter().map(Vec::len).max().unwrap_or(0);
        if inputs.is_empty() || inputs.iter().any(Vec::is_empty) {
            return Err(ModelError::Input("empty input sequence".into()));
        }
        if s > self.enc_emb.max_positions() {
            return Err(ModelError::Input(format!(
                "input of {s} tokens exceeds max_position_embeddings {}",
                self.enc_emb.max_positions()
            )));
        }
        let v = self.cfg.vocab_size as u32;
        if let Some(&bad) = inputs.iter().flatten().find(|&&t| t >= v) {
            return Err(ModelError::Input(format!(
                "token id {bad} >= vocab_size {v}"
            )));
        }
        let mut ids = Vec::with_capacity(inputs.len() * s);
        let mut mask = Vec::with_capacity(inputs.len() * s);
        for row in inputs {
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(self.cfg.pad_token_id, s - row.len()));
            mask.extend(std::iter::repeat_n(0f32, row.len()));
            mask.extend(std::iter::repeat_n(f32::NEG_INFINITY, s - row.len()));
        }
        let b = inputs.len();
        let ids = Tensor::from_vec(ids, (b, s), &self.device)?;
        let mask = Tensor::from_vec(mask, (b, 1, 1, s), &self.device)?;
        Ok((ids, mask))
    }

    /// Encoder output (B, S, d) and the source mask.
    pub(crate) fn encode(&self, inputs: &[Vec<u32>]) -> Res<(Tensor, Tensor)> {
        let (ids, mask) = self.pad_batch(inputs)?;
        let pre = self.cfg.normalize_before;
        let mut x = self.enc_emb.forward(&self.lm_head, &ids, 0)?;
        for l in &self.encoder {
            x = residual(&x, &l.attn_norm, pre, |h| l.attn.forward(h, Some(&mask)))?;
            x = residual(&x, &l.ffn_norm, pre, |h| l.ffn.forward(h))?;
        }
        if let Some(n) = &self.enc_final_norm {
            x = n.forward(&x)?;
        }
        Ok((x, mask))
    }

    /// Encoder last hidden states (B, S, d) of a right-padded batch.
    pub fn encoder_states(&self, input_ids: &[Vec<u32>]) -> Res<Tensor> {
        Ok(self.encode(input_ids)?.0)
    }

    /// Projects cross-attention K/V once and sets up empty self-attention caches for `group`
    /// decoder rows per input (num_beams).
    pub(crate) fn start_decoder(
        &self,
        enc: &Tensor,
        mask: &Tensor,
        capacity: usize,
        group: usize,
    ) -> Res<DecoderState> {
        let group = group.max(1);
        let rows = enc.dim(0)? * group;
        let heads = self.cfg.decoder_attention_heads;
        let hd = self.cfg.d_model / heads;
        let mut self_kv = Vec::with_capacity(self.decoder.len());
        let mut cross_kv = Vec::with_capacity(self.decoder.len());
        let dtype = self.compute.kv_dtype(&self.device);
        for l in &self.decoder {
            self_kv.push(KvCache::new(
                rows,
                heads,
                hd,
                capacity,
                dtype,
                &self.device,
            )?);
            let (k, v) = l.cross.project_kv(enc)?;
            cross_kv.push((in_dtype(&k, dtype)?, in_dtype(&v, dtype)?));
        }
        Ok(DecoderState {
            self_kv,
            ancestry: Ancestry::new(rows),
            cross_kv,
            cross_mask: mask.clone(),
            group,
            rows,
            pos: 0,
            alignment: None,
        })
    }

    /// Longest decoder sequence the position table allows.
    pub(crate) fn max_decoder_positions(&self) -> usize {
        self.dec_emb.max_positions()
    }

    /// Feeds one token per row at position `state.pos`; returns logits (rows, V), row-major.
    pub(crate) fn decode_step(&self, state: &mut DecoderState, tokens: &[u32]) -> Res<Vec<f32>> {
        if state.pos >= self.dec_emb.max_positions() {
            return Err(ModelError::Input(format!(
                "decoder position {} exceeds max_position_embeddings",
                state.pos
            )));
        }
        let ids = Tensor::from_slice(tokens, (tokens.len(), 1), &self.device)?;
        let pre = self.cfg.normalize_before;
        let mut x = self.dec_emb.forward(&self.lm_head, &ids, state.pos)?;
        state.ancestry.push();
        let width = state.cross_mask.dim(3)?;
        let last = self.decoder.len().saturating_sub(1);
        for (i, l) in self.decoder.iter().enumerate() {
            let (cache, ancestry) = (&mut state.self_kv[i], &state.ancestry);
            x = residual(&x, &l.attn_norm, pre, |h| l.attn.step(h, cache, ancestry))?;
            let (k, v) = &state.cross_kv[i];
            let (mask, group) = (&state.cross_mask, state.group);
            let head_mean = match &mut state.alignment {
                Some(a) if i == last => {
                    a.resize(tokens.len() * width, 0.0);
                    Some(a.as_mut_slice())
                }
                _ => None,
            };
            x = residual(&x, &l.cross_norm, pre, |h| {
                l.cross.forward(h, k, v, mask, group, head_mean)
            })?;
            x = residual(&x, &l.ffn_norm, pre, |h| l.ffn.forward(h))?;
        }
        if let Some(n) = &self.dec_final_norm {
            x = n.forward(&x)?;
        }
        state.pos += 1;
        let x = x.reshape((tokens.len(), self.cfg.d_model))?;
        self.lm_head.forward_vec(&x)
    }

    /// Logits (T, V) at every position of `decoder_input_ids`, run through the KV cache.
    pub fn teacher_forced_logits(
        &self,
        input_ids: &[u32],
        decoder_input_ids: &[u32],
    ) -> Res<Tensor> {
        let (enc, mask) = self.encode(&[input_ids.to_vec()])?;
        let mut state = self.start_decoder(&enc, &mask, decoder_input_ids.len(), 1)?;
        let mut steps = Vec::with_capacity(decoder_input_ids.len());
        for &tok in decoder_input_ids {
            steps.extend(self.decode_step(&mut state, &[tok])?);
        }
        let t = decoder_input_ids.len();
        Ok(Tensor::from_vec(
            steps,
            (t, self.cfg.vocab_size),
            &self.device,
        )?)
    }
}

impl Seq2SeqModel {
    /// Reference for tests: the last decoder layer's cross-attention averaged over heads,
    /// (T, S) row-major, of one uncached teacher-forced forward over `decoder_input_ids`
    /// (causal self-attention over the whole sequence, tensor attention math throughout:
    /// none of the decode-step kernels or caches that generation uses; keys and values are
    /// rounded to the caches' dtype, f16 under int8, as generation reads them).
    #[doc(hidden)]
    pub fn reference_cross_attention(
        &self,
        input_ids: &[u32],
        decoder_input_ids: &[u32],
    ) -> Res<Vec<f32>> {
        let (enc, mask) = self.encode(&[input_ids.to_vec()])?;
        let t = decoder_input_ids.len();
        let ids = Tensor::from_slice(decoder_input_ids, (1, t), &self.device)?;
        let causal: Vec<f32> = (0..t * t)
            .map(|i| {
                if i % t > i / t {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let causal = Tensor::from_vec(causal, (1, 1, t, t), &self.device)?;
        let pre = self.cfg.normalize_before;
        let mut x = self.dec_emb.forward(&self.lm_head, &ids, 0)?;
        let mut out = vec![0f32; t * input_ids.len()];
        let last = self.decoder.len().saturating_sub(1);
        // The values generation's caches hold.
        let kv = self.compute.kv_dtype(&self.device);
        for (i, l) in self.decoder.iter().enumerate() {
            x = residual(&x, &l.attn_norm, pre, |h| {
                l.attn.forward_kv_as(h, Some(&causal), kv)
            })?;
            let (k, v) = l.cross.project_kv(&enc)?;
            let (k, v) = (round_to(&k, kv)?, round_to(&v, kv)?);
            let head_mean = (i == last).then_some(out.as_mut_slice());
            x = residual(&x, &l.cross_norm, pre, |h| {
                l.cross.forward(h, &k, &v, &mask, 1, head_mean)
            })?;
            x = residual(&x, &l.ffn_norm, pre, |h| l.ffn.forward(h))?;
        }
        Ok(out)
    }
}

fn load_encoder_layer(ws: &mut dyn WeightSource, cfg: &ModelConfig, i: usize) -> Res<EncoderLayer> {
    let p = format!("model.encoder.layers.{i}");
    let (d, h) = (cfg.d_model, cfg.encoder_attention_heads);
    Ok(EncoderLayer {
        attn: SelfAttention::load(ws, &format!("{p}.self_attn"), d, h)?,
        attn_norm: LayerNorm::load(ws, &format!("{p}.self_attn_layer_norm"), d)?,
        ffn: FeedForward::load(ws, &p, d, cfg.encoder_ffn_dim, cfg.activation_function)?,
        ffn_norm: LayerNorm::load(ws, &format!("{p}.final_layer_norm"), d)?,
    })
}

fn load_decoder_layer(ws: &mut dyn WeightSource, cfg: &ModelConfig, i: usize) -> Res<DecoderLayer> {
    let p = format!("model.decoder.layers.{i}");
    let (d, h) = (cfg.d_model, cfg.decoder_attention_heads);
    Ok(DecoderLayer {
        attn: SelfAttention::load(ws, &format!("{p}.self_attn"), d, h)?,
        attn_norm: LayerNorm::load(ws, &format!("{p}.self_attn_layer_norm"), d)?,
        cross: CrossAttention::load(ws, &format!("{p}.encoder_attn"), d, h)?,
        cross_norm: LayerNorm::load(ws, &format!("{p}.encoder_attn_layer_norm"), d)?,
        ffn: FeedForward::load(ws, &p, d, cfg.decoder_ffn_dim, cfg.activation_function)?,
        ffn_norm: LayerNorm::load(ws, &format!("{p}.final_layer_norm"), d)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows read by `generate_aligned` are exactly 0 on batch padding and sum to 1 over the
    /// input's own tokens, for grouped (beam) rows too.
    #[test]
    fn recorded_rows_are_zero_on_padding() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-marian-ar-en");
        let model = Seq2SeqModel::load(&dir, &Device::Cpu).unwrap();
        let inputs = vec![vec![5, 6, 7, 8, 0], vec![9, 0]];
        let (enc, mask) = model.encode(&inputs).unwrap();
        let mut state = model.start_decoder(&enc, &mask, 4, 2).unwrap();
        state.record_alignment();
        for token in [565, 10, 11] {
            model.decode_step(&mut state, &[token; 4]).unwrap();
            let (rows, width) = state.step_alignment().unwrap().unwrap();
            assert_eq!((rows.len(), width), (4 * 5, 5));
            for (r, row) in rows.chunks(width).enumerate() {
                let real = inputs[r / 2].len();
                assert!(row[real..].iter().all(|&w| w == 0.0), "row {r}: {row:?}");
                let sum: f32 = row[..real].iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "row {r} sums to {sum}");
            }
        }
    }
}
