//! The database's CPU tier on disk: the settings of [`crate::domain::tier::postgres_tier`] in
//! `kanmon-tier.conf` in the data directory, which `postgresql.conf` includes last (so they win
//! over initdb's defaults; data directories initialised before tiers existed get the include
//! line on their next start). A running server picks a changed file up on SIGHUP, or on a
//! restart for the settings that size shared memory and process slots.

use std::path::Path;

use super::{io, placement::ServerUser, write_private, DbError};
use crate::domain::tier::PgSetting;

/// The file holding the tier's settings, in the data directory.
pub(super) const TIER_FILE: &str = "kanmon-tier.conf";

/// The line of `postgresql.conf` that reads [`TIER_FILE`].
const INCLUDE: &str = "include_if_exists = 'kanmon-tier.conf'";

/// The text of [`TIER_FILE`] for `settings`.
pub(super) fn render(db_cpus: u32, settings: &[PgSetting]) -> String {
    let mut text =
        format!("# kanmon: the settings of a {db_cpus}-CPU database (rewritten on scale)\n");
    for s in settings {
        text.push_str(&format!("{} = '{}'\n", s.name, s.value));
    }
    text
}

/// Writes the tier file of `data` (readable by the server user only) and makes sure
/// `postgresql.conf` includes it.
pub(super) fn write(
    data: &Path,
    db_cpus: u32,
    settings: &[PgSetting],
    user: Option<ServerUser>,
) -> Result<(), DbError> {
    write_private(&data.join(TIER_FILE), &render(db_cpus, settings), user)?;
    let conf = data.join("postgresql.conf");
    let text = std::fs::read_to_string(&conf).map_err(io(&conf))?;
    if !text.lines().any(|l| l.trim() == INCLUDE) {
        // Appended in place: the file keeps its owner (the server user, as root).
        let mut text = text;
        text.push_str(&format!(
            "\n# kanmon: the CPU tier's settings, last so they win\n{INCLUDE}\n"
        ));
        std::fs::write(&conf, text).map_err(io(&conf))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tier::postgres_tier;

    #[test]
    fn the_tier_file_is_written_and_included_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("postgresql.conf"),
            "max_connections = 100\n",
        )
        .expect("conf");
        write(dir.path(), 1, &postgres_tier(1), None).expect("first");
        write(dir.path(), 2, &postgres_tier(2), None).expect("second");
        let conf = std::fs::read_to_string(dir.path().join("postgresql.conf")).expect("conf");
        assert_eq!(conf.matches(INCLUDE).count(), 1, "{conf}");
        assert!(conf.ends_with(&format!("{INCLUDE}\n")), "{conf}");
        let tier = std::fs::read_to_string(dir.path().join(TIER_FILE)).expect("tier");
        assert!(tier.contains("max_connections = '60'"), "{tier}");
        assert!(tier.contains("shared_buffers = '512MB'"), "{tier}");
    }
}
