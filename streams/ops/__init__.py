"""Operations: the app's commands, reading a deployment's state, status views, replay (plan and run),
progress bars."""
