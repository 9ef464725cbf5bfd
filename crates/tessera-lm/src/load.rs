//! Opening a model: a GGUF file, or a Hugging Face directory (config.json + safetensors), with
//! its tokenizer and chat template.

use crate::error::{Error, Result};
use crate::model::Model;
use crate::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};

/// A model ready to generate: weights, tokenizer, chat template.
pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: Tokenizer,
    /// The model's Jinja chat template, when the file has one.
    pub chat_template: Option<String>,
    /// A display name.
    pub name: String,
    pub path: PathBuf,
}

impl From<crate::tokenizer::TokenizerError> for Error {
    fn from(e: crate::tokenizer::TokenizerError) -> Error {
        Error::Tokenizer(e.to_string())
    }
}

/// Loads the model at `path`. `progress(done, total)` is called as layers load.
pub fn load(path: impl AsRef<Path>, progress: &mut dyn FnMut(usize, usize)) -> Result<LoadedModel> {
    let path = path.as_ref();
    if path.is_dir() {
        return load_dir(path, progress);
    }
    if !path.exists() {
        return Err(Error::Invalid(format!(
            "{}: no such file (for the test models run scripts/fetch-models.sh)",
            path.display()
        )));
    }
    let file = tessera_io::gguf::GgufFile::open(path)?;
    let config = crate::models::gguf::config_from_gguf(&file)?;
    let tokenizer = Tokenizer::from_gguf(&file)?;
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(Error::Config(format!(
            "the tokenizer has {} tokens but the model only {} embeddings",
            tokenizer.vocab_size(),
            config.vocab_size
        )));
    }
    let model = Model::load(
        config,
        &crate::weights::GgufSource { file: &file },
        progress,
    )?;
    let md = &file.metadata;
    let chat_template = md.str_opt("tokenizer.chat_template")?.map(str::to_string);
    let name = md
        .str_opt("general.name")?
        .map(str::to_string)
        .unwrap_or_else(|| {
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
    Ok(LoadedModel {
        model,
        tokenizer,
        chat_template,
        name,
        path: path.to_path_buf(),
    })
}

/// A Hugging Face style directory: config.json + safetensors (dense or MLX-quantized), with the
/// tokenizer from `tokenizer.gguf` (what `tessera quantize` writes) or else from `tokenizer.json`
/// (+ `tokenizer_config.json`; the chat template from `chat_template.jinja` or the config).
fn load_dir(dir: &Path, progress: &mut dyn FnMut(usize, usize)) -> Result<LoadedModel> {
    let json = crate::models::hf::read_config(dir)?;
    let config = crate::models::hf::config_from_hf(&json)?;
    let gguf_path = dir.join("tokenizer.gguf");
    let (tokenizer, chat_template, gguf_name) = if gguf_path.exists() {
        let tok_file = tessera_io::gguf::GgufFile::open(&gguf_path)?;
        let md = &tok_file.metadata;
        (
            Tokenizer::from_gguf(&tok_file)?,
            md.str_opt("tokenizer.chat_template")?.map(str::to_string),
            md.str_opt("general.name")?.map(str::to_string),
        )
    } else if dir.join("tokenizer.json").exists() {
        (
            Tokenizer::from_hf_dir(dir)?,
            crate::tokenizer::read_chat_template(dir)?,
            None,
        )
    } else {
        return Err(Error::Invalid(format!(
            "{}: no tokenizer.json or tokenizer.gguf next to config.json",
            dir.display()
        )));
    };
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(Error::Config(format!(
            "the tokenizer has {} tokens but the model only {} embeddings",
            tokenizer.vocab_size(),
            config.vocab_size
        )));
    }
    let src = crate::models::hf::HfSource::open(dir, &json, config.arch)?;
    let model = Model::load(config, &src, progress)?;
    let name = gguf_name.unwrap_or_else(|| {
        dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string())
    });
    Ok(LoadedModel {
        model,
        tokenizer,
        chat_template,
        name,
        path: dir.to_path_buf(),
    })
}
