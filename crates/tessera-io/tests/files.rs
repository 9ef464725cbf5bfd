//! Reading files written by the reference Python libraries (gguf-py, safetensors, numpy; see
//! scripts/gen-io-fixtures.py), round trips through tessera's writers, and malformed input:
//! every truncation and many corruptions of each format must be an error, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use tessera_core::quant::GgmlType;
use tessera_core::{Array, Dtype, ops};
use tessera_io::gguf::{GgufFile, GgufWriter, Value, ValueType};
use tessera_io::{npy, safetensors};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn expected() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixture("expected.json")).unwrap()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn as_f32(a: &Array) -> Vec<f32> {
    ops::astype(a, Dtype::F32).unwrap().to_vec::<f32>().unwrap()
}

#[test]
fn gguf_written_by_gguf_py() {
    let f = GgufFile::open(fixture("small.gguf")).unwrap();
    let md = &f.metadata;
    assert_eq!(md.str("general.architecture").unwrap(), "llama");
    assert_eq!(md.get("t.u8"), Some(&Value::U8(200)));
    assert_eq!(md.get("t.i8"), Some(&Value::I8(-5)));
    assert_eq!(md.get("t.u16"), Some(&Value::U16(60000)));
    assert_eq!(md.get("t.i16"), Some(&Value::I16(-30000)));
    assert_eq!(md.get("t.u32"), Some(&Value::U32(4_000_000_000)));
    assert_eq!(md.get("t.i32"), Some(&Value::I32(-2_000_000_000)));
    assert_eq!(md.get("t.f32"), Some(&Value::F32(1.5)));
    assert_eq!(md.get("t.bool"), Some(&Value::Bool(true)));
    assert_eq!(md.str("t.str").unwrap(), "héllo ✓");
    assert_eq!(md.get("t.u64"), Some(&Value::U64((1u64 << 63) + 5)));
    assert_eq!(md.get("t.i64"), Some(&Value::I64(-(1i64 << 62))));
    assert_eq!(md.get("t.f64"), Some(&Value::F64(0.1)));
    assert_eq!(md.numbers("t.arr_i32").unwrap(), vec![1.0, -2.0, 3.0]);
    assert_eq!(md.strings("t.arr_str").unwrap(), vec!["a", "bc", ""]);

    let e = expected();
    let g = &e["gguf"];
    let a = f.tensor("a").unwrap();
    assert_eq!(a.shape(), &[3, 4]);
    assert_eq!(as_f32(&a), floats(&g["a"]));
    let h = f.tensor("h").unwrap();
    assert_eq!((h.dtype(), h.shape()), (Dtype::F16, &[2usize, 8][..]));
    assert_eq!(as_f32(&h), floats(&g["h"]));
    for (name, ty, key) in [
        ("q8", GgmlType::Q8_0, "q8_dequant"),
        ("q4", GgmlType::Q4_0, "q4_dequant"),
    ] {
        let info = f.info(name).unwrap();
        assert_eq!((info.ggml_type, info.shape.clone()), (ty, vec![2, 64]));
        let blocks = f.tensor(name).unwrap();
        assert_eq!(blocks.shape(), &[2, ty.row_bytes(64).unwrap()]);
        assert_eq!(blocks.dtype(), Dtype::U8);
        assert_eq!(
            f.tensor_bytes(name).unwrap().len(),
            2 * ty.row_bytes(64).unwrap()
        );
        let _ = key;
    }
}

#[test]
fn gguf_round_trip_every_value_type() {
    let mut w = GgufWriter::new();
    let values = vec![
        ("u8", Value::U8(1)),
        ("i8", Value::I8(-1)),
        ("u16", Value::U16(2)),
        ("i16", Value::I16(-2)),
        ("u32", Value::U32(3)),
        ("i32", Value::I32(-3)),
        ("f32", Value::F32(0.25)),
        ("bool", Value::Bool(false)),
        ("str", Value::String("x y".into())),
        ("u64", Value::U64(u64::MAX)),
        ("i64", Value::I64(i64::MIN)),
        ("f64", Value::F64(-1e300)),
        ("empty", Value::Array(ValueType::F32, vec![])),
        (
            "nested",
            Value::Array(
                ValueType::Array,
                vec![Value::Array(ValueType::U8, vec![Value::U8(7)])],
            ),
        ),
    ];
    for (k, v) in &values {
        w.metadata.insert(*k, v.clone());
    }
    let data: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    w.add_tensor("t0", &[2, 3], GgmlType::F32, data).unwrap();
    w.add_tensor("t1", &[1, 32], GgmlType::Q8_0, vec![0u8; 34])
        .unwrap();
    assert!(
        w.add_tensor("bad", &[1, 30], GgmlType::Q8_0, vec![0u8; 34])
            .is_err()
    );
    assert!(
        w.add_tensor("t0", &[1], GgmlType::F32, vec![0u8; 4])
            .is_err()
    );
    // tessera's in-memory layout has no GGUF type.
    let err = w
        .add_tensor("x8", &[8, 32], GgmlType::Q4_0x8, vec![0u8; 144])
        .unwrap_err()
        .to_string();
    assert!(err.contains("in-memory layout"), "{err}");
    w.alignment = 64;
    let bytes = w.to_bytes().unwrap();
    let f = GgufFile::from_bytes(bytes).unwrap();
    for (k, v) in &values {
        assert_eq!(f.metadata.get(k), Some(v), "{k}");
    }
    assert_eq!(f.alignment, 64);
    assert_eq!(
        as_f32(&f.tensor("t0").unwrap()),
        vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    );
    assert_eq!(f.info("t1").unwrap().offset % 64, 0);

    let dir = std::env::temp_dir().join(format!("tessera-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("rt.gguf");
    w.write(&p).unwrap();
    let g = GgufFile::open(&p).unwrap();
    assert_eq!(
        as_f32(&g.tensor("t0").unwrap()),
        vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Every prefix of the file, and every single-byte corruption in the header region, is either
/// parsed or rejected with an error: never a panic, never a wild read.
#[test]
fn gguf_truncated_or_corrupt_is_an_error() {
    let bytes = std::fs::read(fixture("small.gguf")).unwrap();
    // gguf-py pads after the last tensor, so prefixes that drop only padding still parse.
    for n in 0..bytes.len() {
        match GgufFile::from_bytes(bytes[..n].to_vec()) {
            Ok(_) => assert!(n + 31 >= bytes.len(), "prefix of {n} bytes parsed"),
            Err(e) => assert!(e.to_string().contains("offset"), "{e}"),
        }
    }
    let header_len = bytes.len() - 700; // data section is the tail; corrupt the rest
    for i in 0..header_len {
        for v in [0x00u8, 0xff, 0x7f, 0x80, 0x01] {
            let mut b = bytes.clone();
            b[i] = v;
            if let Ok(f) = GgufFile::from_bytes(b) {
                // A parse that succeeds must give tensors that can be read safely.
                for t in f.tensors.clone() {
                    let _ = f.tensor(&t.name).map(|a| a.eval());
                }
            }
        }
    }
}

#[test]
fn gguf_errors_name_the_problem() {
    let err = GgufFile::from_bytes(b"GGML\x03\0\0\0".to_vec())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not a GGUF file"), "{err}");
    let mut v1 = b"GGUF".to_vec();
    v1.extend_from_slice(&1u32.to_le_bytes());
    let err = GgufFile::from_bytes(v1).err().unwrap().to_string();
    assert!(err.contains("version 1"), "{err}");
    // A tensor count no file could hold.
    let mut huge = b"GGUF".to_vec();
    huge.extend_from_slice(&3u32.to_le_bytes());
    huge.extend_from_slice(&u64::MAX.to_le_bytes());
    huge.extend_from_slice(&0u64.to_le_bytes());
    let err = GgufFile::from_bytes(huge).err().unwrap().to_string();
    assert!(err.contains("tensor count"), "{err}");
    let err = GgufFile::open("/nonexistent/model.gguf")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/nonexistent/model.gguf"), "{err}");
}

#[test]
fn safetensors_written_by_the_reference() {
    let f = safetensors::SafetensorsFile::open(fixture("small.safetensors")).unwrap();
    assert_eq!(
        f.metadata.get("note").map(String::as_str),
        Some("tessera test")
    );
    let e = expected();
    for (name, dtype, shape) in [
        ("w.f32", Dtype::F32, vec![2, 3]),
        ("w.f16", Dtype::F16, vec![4]),
        ("w.i64", Dtype::I64, vec![3, 2]),
        ("w.u8", Dtype::U8, vec![5]),
    ] {
        let a = f.tensor(name).unwrap();
        assert_eq!((a.dtype(), a.shape().to_vec()), (dtype, shape), "{name}");
        assert_eq!(as_f32(&a), floats(&e["safetensors"][name]), "{name}");
    }
}

#[test]
fn safetensors_round_trip_and_shards() {
    let dir = std::env::temp_dir().join(format!("tessera-st-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    let at = ops::transpose(&a, None).unwrap(); // strided input is written row-major
    let b = Array::from_slice(&[7i32, 8], &[2]).unwrap();
    let c = ops::astype(&a, Dtype::BF16).unwrap();
    let mut md = BTreeMap::new();
    md.insert("k".to_string(), "v".to_string());
    safetensors::save(dir.join("one.safetensors"), &[("at", &at), ("b", &b)], &md).unwrap();
    safetensors::save(dir.join("two.safetensors"), &[("c", &c)], &BTreeMap::new()).unwrap();
    let index = r#"{"metadata": {}, "weight_map": {"at": "one.safetensors", "b": "one.safetensors", "c": "two.safetensors"}}"#;
    std::fs::write(dir.join("model.safetensors.index.json"), index).unwrap();
    let s = safetensors::Safetensors::open(&dir).unwrap();
    assert_eq!(
        as_f32(&s.tensor("at").unwrap()),
        vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
    );
    assert_eq!(s.tensor("b").unwrap().to_vec::<i32>().unwrap(), vec![7, 8]);
    assert_eq!(s.tensor("c").unwrap().dtype(), Dtype::BF16);
    assert_eq!(s.metadata().get("k").map(String::as_str), Some("v"));
    assert!(s.tensor("missing").is_err());
    // An index pointing at a shard without the tensor, or outside the directory, is refused.
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        r#"{"weight_map": {"zz": "two.safetensors"}}"#,
    )
    .unwrap();
    assert!(safetensors::Safetensors::open(&dir).is_err());
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        r#"{"weight_map": {"c": "../two.safetensors"}}"#,
    )
    .unwrap();
    assert!(safetensors::Safetensors::open(&dir).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn safetensors_truncated_or_corrupt_is_an_error() {
    let bytes = std::fs::read(fixture("small.safetensors")).unwrap();
    for n in 0..bytes.len() {
        assert!(
            safetensors::SafetensorsFile::from_bytes(bytes[..n].to_vec()).is_err(),
            "prefix {n}"
        );
    }
    for i in 0..bytes.len() {
        for v in [b'0', b'9', b'"', b'}', 0xff] {
            let mut b = bytes.clone();
            b[i] = v;
            if let Ok(f) = safetensors::SafetensorsFile::from_bytes(b) {
                for t in f.tensors.clone() {
                    let _ = f.tensor(&t.name).map(|a| a.eval());
                }
            }
        }
    }
    // Overlapping ranges.
    let header = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    let mut f = (header.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(header);
    f.extend_from_slice(&[0u8; 8]);
    let err = safetensors::SafetensorsFile::from_bytes(f)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("overlap"), "{err}");
}

#[test]
fn npy_files_written_by_numpy() {
    let a = npy::load(fixture("f32_c.npy")).unwrap();
    assert_eq!(a.shape(), &[3, 4]);
    assert_eq!(
        a.to_vec::<f32>().unwrap(),
        (0..12).map(|v| v as f32).collect::<Vec<_>>()
    );
    let f = npy::load(fixture("f64_fortran.npy")).unwrap();
    assert_eq!(f.shape(), &[2, 3]);
    assert_eq!(
        ops::contiguous(&f).unwrap().to_vec::<f64>().unwrap(),
        vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    );
    let be = npy::load(fixture("i32_be.npy")).unwrap();
    assert_eq!(be.to_vec::<i32>().unwrap(), vec![0, 1, 2, 3]);
    let s = npy::load(fixture("bool_scalar.npy")).unwrap();
    assert_eq!((s.shape().len(), s.item::<bool>().unwrap()), (0, true));
    for name in ["pair.npz", "pair_compressed.npz"] {
        let z = npy::load_npz(fixture(name)).unwrap();
        assert_eq!(z["x"].to_vec::<i64>().unwrap(), vec![0, 1, 2], "{name}");
        assert_eq!(z["y"].to_vec::<f32>().unwrap(), vec![1.0; 4], "{name}");
    }
}

#[test]
fn npy_round_trip_and_malformed() {
    let dir = std::env::temp_dir().join(format!("tessera-npy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = ops::transpose(
        &Array::from_slice(&[1i64, 2, 3, 4, 5, 6], &[2, 3]).unwrap(),
        None,
    )
    .unwrap();
    npy::save(dir.join("a.npy"), &a).unwrap();
    let b = npy::load(dir.join("a.npy")).unwrap();
    assert_eq!(b.shape(), &[3, 2]);
    assert_eq!(b.to_vec::<i64>().unwrap(), vec![1, 4, 2, 5, 3, 6]);
    let s = Array::scalar(2.5f32);
    npy::save_npz(dir.join("z.npz"), &[("a", &a), ("s", &s)]).unwrap();
    let z = npy::load_npz(dir.join("z.npz")).unwrap();
    assert_eq!(z["s"].item::<f32>().unwrap(), 2.5);
    assert_eq!(z["a"].to_vec::<i64>().unwrap(), vec![1, 4, 2, 5, 3, 6]);
    let bytes = npy::to_bytes(&a).unwrap();
    for n in 0..bytes.len() {
        assert!(npy::from_bytes(&bytes[..n]).is_err(), "prefix {n}");
    }
    let zbytes = std::fs::read(fixture("pair_compressed.npz")).unwrap();
    for n in 0..zbytes.len() {
        std::fs::write(dir.join("t.npz"), &zbytes[..n]).unwrap();
        assert!(npy::load_npz(dir.join("t.npz")).is_err(), "npz prefix {n}");
    }
    for i in 0..zbytes.len() {
        let mut b = zbytes.clone();
        b[i] ^= 0x5a;
        std::fs::write(dir.join("t.npz"), &b).unwrap();
        let _ = npy::load_npz(dir.join("t.npz")); // must not panic
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn gguf_split_files_open_as_one_model() {
    let whole = GgufFile::open(fixture("small.gguf")).unwrap();
    assert!(whole.tensors.len() >= 3);
    let dir = std::env::temp_dir().join(format!("tessera-gguf-split-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let paths = whole.write_split(&dir, "model", 3).unwrap();
    assert_eq!(paths.len(), 3);
    let first = dir.join("model-00001-of-00003.gguf");
    let split = GgufFile::open(&first).unwrap();
    assert_eq!(split.files(), 3);
    assert_eq!(split.tensors.len(), whole.tensors.len());
    for t in &whole.tensors {
        assert_eq!(
            split.tensor_bytes(&t.name).unwrap(),
            whole.tensor_bytes(&t.name).unwrap(),
            "{}",
            t.name
        );
        let (a, b) = (
            split.tensor(&t.name).unwrap(),
            whole.tensor(&t.name).unwrap(),
        );
        assert_eq!(a.shape(), b.shape());
        assert_eq!(a.dtype(), b.dtype());
    }
    // Opening a later file says which one to open.
    let second = dir.join("model-00002-of-00003.gguf");
    let err = GgufFile::open(&second).err().unwrap().to_string();
    assert!(err.contains("model-00001-of-00003.gguf"), "{err}");
    // A missing file is named.
    std::fs::remove_file(dir.join("model-00003-of-00003.gguf")).unwrap();
    let err = GgufFile::open(&first).err().unwrap().to_string();
    assert!(
        err.contains("model-00003-of-00003.gguf") && err.contains("missing"),
        "{err}"
    );
    // A shard from another split (wrong number) is refused.
    std::fs::copy(&second, dir.join("model-00003-of-00003.gguf")).unwrap();
    let err = GgufFile::open(&first).err().unwrap().to_string();
    assert!(err.contains("expected 3 of 3"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
