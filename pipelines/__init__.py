"""End-to-end workflows (installed as medattn.pipelines): compose medattn parts; the CLI and API call these."""
