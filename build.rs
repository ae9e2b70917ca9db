//! Compiles the gRPC contract with the protoc binary shipped by `protoc-bin-vendored`, so a
//! fresh machine needs no system protoc. Generated code stays in OUT_DIR.
use std::{env, error::Error, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe { env::set_var("PROTOC", protoc) };
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("tarjama_descriptor.bin"))
        // Undecodable requests (invalid UTF-8 in a string) are the client's fault:
        // INVALID_ARGUMENT, not the INTERNAL that the stock prost codec answers.
        .codec_path("crate::api::codec::CheckedCodec")
        .compile_protos(&["proto/tarjama/v1/tarjama.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
