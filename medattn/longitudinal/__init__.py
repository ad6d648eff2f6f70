"""Follow-up over time (`medattn track`): one patient's scans at several dates, lesions matched across them.

One module per job: `dates` (each visit's date and the checks that the visits belong together),
`registration` (rigid registration of every visit to the baseline, SimpleITK), `lesions` (connected
components and their volume, centroid and RANO/RECIST diameters), `matching` (lesions of consecutive
visits matched in the baseline frame, with stable ids), `growth` (doubling time and volumetric
categories), `pictures` and `report_html` (the self-contained HTML report). `medattn.pipelines.track`
composes them.
"""
