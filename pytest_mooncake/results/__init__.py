"""The results document, baselines and Allure attachments."""
