"""What the page's real tests index and ask (tests/ui/conftest.py builds the index)."""

SMALL_INDEX_IDS = (
    "ngc-10192",  # Screening for lung cancer (USPSTF)
    "ngc-10198",  # Screening for gestational diabetes mellitus (USPSTF)
    "medquad-cdc-0000094",  # Varicella (chickenpox) vaccination
    "medquad-cdc-0000141",  # Eastern equine encephalitis
    "medquad-nhlbi-0000021",  # Bronchitis
)
QUESTION = "Who should be screened for lung cancer?"
QUESTION_DOC_TITLE = "Screening for lung cancer"
