//! The `run-command` Lambda: the RunCommand stage of the bake (docs/stages.md). Logic: golden_core::bake::command.

use golden_core::bake::command;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    golden_core::runtime::serve("RunCommand", |services, input| async move {
        command::run(&services, input).await
    })
    .await
}
