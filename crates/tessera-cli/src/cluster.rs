//! `tessera cluster check`: measure every link of a cluster. Run it under the launcher, or give
//! it the launcher's flags and it launches itself.

use crate::args::Flags;
use crate::launch::{VALUE_FLAGS, spec};
use tessera::distributed::check::{check_links, format_table};
use tessera::distributed::{Backend, init, launch::launch};

pub const USAGE: &str =
    "usage: tessera cluster check (-n N [--hosts a,b] | --hostfile hosts.json) [--bytes B]";

pub fn run(args: &[String]) -> Result<i32, String> {
    if args.first().map(String::as_str) != Some("check") {
        return Err(format!("unknown cluster command\n{USAGE}"));
    }
    let mut value_flags = VALUE_FLAGS.to_vec();
    value_flags.push("--bytes");
    let flags = Flags::parse(&args[1..], &value_flags, &["--encrypt"])?;
    let bytes = flags.num::<usize>("--bytes", 64 << 20)?;
    if std::env::var("TESSERA_WORLD_SIZE").is_err() {
        // Not a rank yet: start ourselves as the ranks.
        if flags.get("-n").is_none() && flags.get("--hostfile").is_none() {
            return Err(format!("say which cluster to check\n{USAGE}"));
        }
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let program = vec![
            exe.display().to_string(),
            "cluster".into(),
            "check".into(),
            "--bytes".into(),
            bytes.to_string(),
        ];
        let outcome = launch(&spec(&flags, program)?).map_err(|e| e.to_string())?;
        return Ok(outcome.code);
    }
    let g = init(Backend::Any).map_err(|e| e.to_string())?;
    let stats = check_links(g.handle().0.as_ref(), bytes).map_err(|e| e.to_string())?;
    if g.rank() == 0 {
        let hosts: Vec<String> = std::env::var("TESSERA_HOSTS")
            .unwrap_or_default()
            .split(',')
            .map(str::to_string)
            .collect();
        print!("{}", format_table(&stats, &hosts));
    }
    Ok(0)
}
