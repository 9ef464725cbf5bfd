//! Saving and loading a module's weights as safetensors. Names are the module's dotted
//! parameter names (`layers.0.weight`, `layers.0.bias`, ...), which are PyTorch's `state_dict`
//! names for the same module structure, so checkpoints move between the two (convolution
//! weights excepted: tessera keeps them channels-last, see the conv layers).

use crate::Module;
use std::path::Path;
use tessera_core::transforms::Params;
use tessera_core::{Array, Error, Result};

fn io_err(e: tessera_io::Error) -> Error {
    Error::Invalid {
        op: "weights file",
        msg: e.to_string(),
    }
}

/// Writes every parameter of `module` to a safetensors file at `path`.
pub fn save_weights(module: &impl Module, path: impl AsRef<Path>) -> Result<()> {
    let params = module.parameters();
    let refs: Vec<(&str, &Array)> = params.iter().map(|(k, v)| (k.as_str(), v)).collect();
    tessera_io::safetensors::save(path.as_ref(), &refs, &Default::default()).map_err(io_err)
}

/// Loads weights saved by [`save_weights`] (or a PyTorch `state_dict` saved as safetensors)
/// into `module`. Tensors are converted to each parameter's dtype; shapes must match. With
/// `strict`, the file must hold exactly the module's parameters (the error lists what is
/// missing or unexpected); without it, only the parameters present in the file are replaced.
pub fn load_weights(module: &mut impl Module, path: impl AsRef<Path>, strict: bool) -> Result<()> {
    let path = path.as_ref();
    let f = tessera_io::safetensors::SafetensorsFile::open(path).map_err(io_err)?;
    let current = module.parameters();
    let in_file: Vec<&str> = f.tensors.iter().map(|t| t.name.as_str()).collect();
    if strict {
        let missing: Vec<&String> = current
            .keys()
            .filter(|k| !in_file.contains(&k.as_str()))
            .collect();
        let unexpected: Vec<&&str> = in_file
            .iter()
            .filter(|k| !current.contains_key(**k))
            .collect();
        if !missing.is_empty() || !unexpected.is_empty() {
            return Err(Error::Invalid {
                op: "load_weights",
                msg: format!(
                    "{}: missing {missing:?}, unexpected {unexpected:?}",
                    path.display()
                ),
            });
        }
    }
    let mut loaded = Params::new();
    for (name, p) in &current {
        if in_file.contains(&name.as_str()) {
            let t = f.tensor(name).map_err(io_err)?;
            loaded.insert(name.clone(), t.astype(p.dtype())?);
        } else {
            loaded.insert(name.clone(), p.clone());
        }
    }
    module.load_parameters(&loaded)
}
