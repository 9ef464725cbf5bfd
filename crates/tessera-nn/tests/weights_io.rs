//! Module weights through safetensors: a model saved and loaded into a differently initialised
//! one computes the same outputs; mismatched files are clear errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tessera_core::{Array, Dtype, random};
use tessera_nn::io::{load_weights, save_weights};
use tessera_nn::layers::Mlp;
use tessera_nn::{Module, activations};

#[test]
fn saved_weights_load_into_another_model() {
    let dir = std::env::temp_dir().join(format!("tessera-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mlp.safetensors");
    let a = Mlp::new(&[5, 7, 3], activations::relu, &random::key(1)).unwrap();
    save_weights(&a, &file).unwrap();
    let mut b = Mlp::new(&[5, 7, 3], activations::relu, &random::key(2)).unwrap();
    let x = random::normal(&[4, 5], Dtype::F32, 0.0, 1.0, Some(&random::key(3))).unwrap();
    let before = b.forward(&x).unwrap().to_vec::<f32>().unwrap();
    load_weights(&mut b, &file, true).unwrap();
    let (ya, yb) = (a.forward(&x).unwrap(), b.forward(&x).unwrap());
    assert_eq!(ya.to_vec::<f32>().unwrap(), yb.to_vec::<f32>().unwrap());
    assert_ne!(before, yb.to_vec::<f32>().unwrap());
    // PyTorch's names for the same structure.
    let names: Vec<String> = a.parameters().keys().cloned().collect();
    assert_eq!(
        names,
        vec![
            "layers.0.bias",
            "layers.0.weight",
            "layers.1.bias",
            "layers.1.weight"
        ]
    );

    // A file for another architecture: strict names what is missing and unexpected.
    let mut c = Mlp::new(&[5, 7, 7, 3], activations::relu, &random::key(4)).unwrap();
    let e = load_weights(&mut c, &file, true).unwrap_err().to_string();
    assert!(
        e.contains("layers.2.weight") && e.contains("missing"),
        "{e}"
    );
    // Not strict: shapes still have to match where names do.
    let e = load_weights(&mut c, &file, false).unwrap_err().to_string();
    assert!(e.contains("shape"), "{e}");
    // A file that is not safetensors.
    std::fs::write(dir.join("bad.safetensors"), b"not a file").unwrap();
    let mut d = Mlp::new(&[5, 7, 3], activations::relu, &random::key(5)).unwrap();
    assert!(load_weights(&mut d, dir.join("bad.safetensors"), true).is_err());
    std::fs::remove_dir_all(&dir).ok();
    let _ = Array::from_slice(&[0f32], &[1]);
}
