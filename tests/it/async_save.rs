//! Asynchronous checkpoint saving (`TrainerBuilder::async_checkpointing`).
