//! `ringshare` alone on a terminal: the original client's menu (search and
//! download, upload, list, nodes), on the same client code as the commands.

use std::path::PathBuf;

use dialoguer::theme::ColorfulTheme;
use dialoguer::{Input, Select};

use super::{Client, ClientError, GetOptions, PutOptions};

const CHOICES: [&str; 6] =
    ["Search and download", "Upload a file", "List every file", "List the nodes", "Change node", "Quit"];

/// Runs the menu until Quit (or end of input).
pub async fn run(mut client: Client) -> Result<(), ClientError> {
    let theme = ColorfulTheme::default();
    let io = |e: dialoguer::Error| ClientError::Local(format!("the terminal: {e}"));
    loop {
        let prompt = format!("ringshare — node {}", client.node());
        let Some(choice) =
            Select::with_theme(&theme).with_prompt(prompt).items(CHOICES).default(0).interact_opt().map_err(io)?
        else {
            return Ok(());
        };
        let outcome = match choice {
            0 => search_and_download(&client, &theme).await,
            1 => {
                let path: String =
                    Input::with_theme(&theme).with_prompt("File to upload").interact_text().map_err(io)?;
                let options = PutOptions { files: vec![PathBuf::from(path.trim())], name: None, overwrite: false };
                client.put(options).await
            }
            2 => client.ls(true).await,
            3 => client.nodes().await,
            4 => {
                let node: String = Input::with_theme(&theme)
                    .with_prompt("Node (host:port)")
                    .with_initial_text(client.node())
                    .interact_text()
                    .map_err(io)?;
                match Client::new(node.trim(), false).and_then(|c| c.with_token(client.token())) {
                    Ok(other) => {
                        client = other;
                        Ok(format!("now talking to {}", client.node()))
                    }
                    Err(e) => Err(e),
                }
            }
            _ => return Ok(()),
        };
        match outcome {
            Ok(text) if !text.is_empty() => println!("{text}\n"),
            Ok(_) => {}
            Err(e) => eprintln!("{e}\n"),
        }
    }
}

async fn search_and_download(client: &Client, theme: &ColorfulTheme) -> Result<String, ClientError> {
    let io = |e: dialoguer::Error| ClientError::Local(format!("the terminal: {e}"));
    let prefix: String =
        Input::with_theme(theme).with_prompt("Name starts with").allow_empty(true).interact_text().map_err(io)?;
    let found = client.get_json(&format!("/search?q={}", super::encode(prefix.trim()))).await?;
    let files: Vec<(String, u64)> = found
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| Some((f["name"].as_str()?.to_owned(), f["size"].as_u64().unwrap_or(0))))
        .collect();
    if files.is_empty() {
        return Ok(format!("no file starts with {:?}", prefix.trim()));
    }
    let items: Vec<String> = files.iter().map(|(n, s)| format!("{n}  ({})", super::show::size(*s))).collect();
    let Some(pick) =
        Select::with_theme(theme).with_prompt("Download").items(&items).default(0).interact_opt().map_err(io)?
    else {
        return Ok(String::new());
    };
    let name = files[pick].0.clone();
    let output: String =
        Input::with_theme(theme).with_prompt("Save as").with_initial_text(&name).interact_text().map_err(io)?;
    client.get(GetOptions { name, output: Some(PathBuf::from(output.trim())), resume: true }).await
}
