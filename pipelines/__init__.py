"""End-to-end workflows (installed as medattn.pipelines): compose medattn parts for the CLI and API."""
