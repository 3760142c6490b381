//! Seal and open of 1 KiB and 16 KiB prompts to 1, 4 and 8 recipients, next to raw
//! ChaCha20-Poly1305 on the same bytes in the same run, and the response stream per chunk.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    clippy::panic
)]
#![allow(missing_docs)]

use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chainference_core::envelope::{self, ClientSecret, ResponseSealer, ServerKeyPair};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn prompt_envelope(c: &mut Criterion) {
    let request = [7u8; 32];
    let client = ClientSecret::from_wallet_signature(&[1; 64]).request_keys(&request);
    let servers: Vec<ServerKeyPair> = (0..8u8).map(|i| ServerKeyPair::from_seed(&[i + 1; 32])).collect();
    let pks: Vec<[u8; 32]> = servers.iter().map(ServerKeyPair::public_key).collect();
    let mut group = c.benchmark_group("prompt");
    for size in [1024usize, 16 * 1024] {
        let prompt = vec![0x61u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        let cipher = ChaCha20Poly1305::new(&[9u8; 32].into());
        group.bench_with_input(BenchmarkId::new("raw-chacha20poly1305-seal", size), &prompt, |b, p| {
            b.iter(|| {
                let mut buf = p.clone();
                black_box(cipher.encrypt_inout_detached(&Default::default(), b"", buf.as_mut_slice().into()).unwrap())
            })
        });
        for n in [1usize, 4, 8] {
            let id = format!("{size}B/{n}r");
            group.bench_function(BenchmarkId::new("seal", &id), |b| {
                b.iter(|| {
                    envelope::seal_prompt(&request, &pks[..n], &client.prompt_public_key(), black_box(&prompt)).unwrap()
                })
            });
            let sealed = envelope::seal_prompt(&request, &pks[..n], &client.prompt_public_key(), &prompt).unwrap();
            group.bench_function(BenchmarkId::new("open", &id), |b| {
                b.iter(|| envelope::open_prompt(black_box(&sealed), &request, 0, servers[0].secret()).unwrap())
            });
        }
    }
    group.finish();
}

fn response_stream(c: &mut Criterion) {
    let request = [7u8; 32];
    let server = [8u8; 32];
    let keys = ClientSecret::from_wallet_signature(&[1; 64]).request_keys(&request);
    let text = vec![0x62u8; 256];
    let mut group = c.benchmark_group("stream");
    group.throughput(Throughput::Bytes(text.len() as u64));
    let mut sealer = ResponseSealer::new(&keys.response_public_key(), &request, &server).unwrap();
    group.bench_function("seal-chunk-256B", |b| b.iter(|| sealer.seal_chunk(black_box(&text), false).unwrap()));
    group.bench_function("setup-sender", |b| {
        b.iter(|| ResponseSealer::new(&keys.response_public_key(), &request, &server).unwrap())
    });
    group.finish();
}

criterion_group!(benches, prompt_envelope, response_stream);
criterion_main!(benches);
