//! `image ls`, `image import`.

use anyhow::Result;
use dwell_contract::images::{Image, ImportBody};

use crate::cli::ImageCommand;
use crate::client::Client;
use crate::output;

pub async fn run(c: &Client, cmd: ImageCommand) -> Result<i32> {
    match cmd {
        ImageCommand::Ls(a) => {
            let list: Vec<Image> = c.get("/v1/images").await?;
            if a.json {
                output::json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|i| {
                        vec![
                            i.name.clone(),
                            i.id.chars().take(19).collect(),
                            i.layers.len().to_string(),
                            output::size(i.size_bytes),
                            i.source.clone(),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "ID", "LAYERS", "SIZE", "SOURCE"], &rows);
            }
        }
        ImageCommand::Import { name, path } => {
            let path = std::fs::canonicalize(&path).unwrap_or(path);
            let img: Image = c
                .post(
                    "/v1/images",
                    &ImportBody {
                        name,
                        path: path.display().to_string(),
                    },
                )
                .await?;
            println!("{}", img.name);
            eprintln!(
                "imported {} ({} layers, {})",
                img.name,
                img.layers.len(),
                output::size(img.size_bytes)
            );
        }
    }
    Ok(0)
}
