//! Tokenizer benchmark (harness = false): `cargo bench --bench tokenizer`.
//! Prints the load time of a 32 000-piece SentencePiece model (random pieces,
//! the fixture's nmt_nfkc normalizer spec) and encode throughput on the seed
//! article, in characters per second.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prost::Message;
use tarjama::tokenizer::proto::{self, ModelProto, SentencePiece};
use tarjama::tokenizer::{MarianTokenizer, SpmModel, Tokenizer};

const PIECES: usize = 32_000;

fn fixtures() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")).to_path_buf()
}

fn random_pieces(rng: &mut fastrand::Rng) -> Vec<String> {
    let letters: Vec<char> = (0x0621..=0x064Au32)
        .chain(0x0660..=0x0669)
        .filter_map(char::from_u32)
        .chain("0123456789.,:;!?()-«»".chars())
        .collect();
    let mut set: BTreeSet<String> = letters.iter().map(|c| c.to_string()).collect();
    set.insert("\u{2581}".into());
    while set.len() < PIECES - 3 {
        let len = 1 + rng.usize(..8);
        let mut p = String::new();
        if rng.bool() {
            p.push('\u{2581}');
        }
        (0..len).for_each(|_| p.push(letters[rng.usize(..letters.len())]));
        set.insert(p);
    }
    set.into_iter().collect()
}

/// Writes a 32k-piece `source.spm` + `vocab.json` model folder.
fn build_model(dir: &Path) {
    let fixture = std::fs::read(fixtures().join("tiny-marian-ar-en/source.spm")).unwrap();
    let base = ModelProto::decode(fixture.as_slice()).unwrap();
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    let piece = |p: &str, score: f32, kind: i32| SentencePiece {
        piece: Some(p.to_owned()),
        score: Some(score),
        r#type: Some(kind),
    };
    let mut pieces = vec![
        piece("<unk>", 0.0, proto::TYPE_UNKNOWN),
        piece("<s>", 0.0, proto::TYPE_CONTROL),
        piece("</s>", 0.0, proto::TYPE_CONTROL),
    ];
    for p in random_pieces(&mut rng) {
        let score = -1.0 - (rng.u32(..10_000) as f32) / 1000.0;
        pieces.push(piece(&p, score, proto::TYPE_NORMAL));
    }
    let mut trainer = base.trainer_spec.clone().unwrap();
    trainer.vocab_size = Some(pieces.len() as i32);
    let model = ModelProto {
        pieces,
        trainer_spec: Some(trainer),
        normalizer_spec: base.normalizer_spec.clone(),
        denormalizer_spec: None,
    };
    let mut vocab: HashMap<String, u32> = HashMap::new();
    vocab.insert("</s>".into(), 0);
    vocab.insert("<unk>".into(), 1);
    for p in model.pieces.iter().skip(3) {
        let id = vocab.len() as u32;
        vocab.insert(p.piece.clone().unwrap(), id);
    }
    vocab.insert("<pad>".into(), vocab.len() as u32);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("source.spm"), model.encode_to_vec()).unwrap();
    std::fs::write(dir.join("vocab.json"), serde_json::to_vec(&vocab).unwrap()).unwrap();
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .min()
        .unwrap()
}

fn throughput(name: &str, tok: &Tokenizer, text: &str) {
    let chars = text.chars().count();
    let reps = 200;
    let t = best_of(3, || {
        for _ in 0..reps {
            std::hint::black_box(tok.encode(text).unwrap());
        }
    });
    let per_sec = (chars * reps) as f64 / t.as_secs_f64();
    let tokens = tok.encode(text).unwrap().len();
    println!(
        "encode {name}: {chars} chars -> {tokens} ids, {per_sec:.0} chars/s ({:.1} µs/article)",
        t.as_secs_f64() * 1e6 / reps as f64
    );
}

fn main() {
    let dir = std::env::temp_dir().join(format!("tarjama-bench-{}", std::process::id()));
    build_model(&dir);
    let spm_path = dir.join("source.spm");
    let size = std::fs::metadata(&spm_path).unwrap().len();
    let spm_load = best_of(5, || SpmModel::from_file(&spm_path).unwrap());
    let full_load = best_of(5, || MarianTokenizer::from_dir(&dir).unwrap());
    println!(
        "load spm ({PIECES} pieces, {size} bytes): {:.2} ms",
        spm_load.as_secs_f64() * 1e3
    );
    println!(
        "load MarianTokenizer (spm + {PIECES}-entry vocab.json): {:.2} ms",
        full_load.as_secs_f64() * 1e3
    );

    let article = std::fs::read_to_string(fixtures().join("seed-article-ar.txt")).unwrap();
    let big = Tokenizer::from_dir(&dir).unwrap();
    let tiny = Tokenizer::from_dir(&fixtures().join("tiny-marian-ar-en")).unwrap();
    throughput("32k-piece spm", &big, &article);
    throughput("fixture spm (280 pieces)", &tiny, &article);
    let _ = std::fs::remove_dir_all(&dir);
}
