"""The operator's pages in a real browser: headless Chromium (Debian's chromium and chromium-driver, driven by
selenium) against gunicorn, the production web command, serving the static files through WhiteNoise.

It logs into admin, opens the dashboard (its charts are drawn, with data), a job's page and /api/docs/ (Swagger UI
lists the operations, every asset from our own server), and requires a console without errors. One browser serves
the module; a failed check leaves a screenshot in var/browser/, and the dashboard's is always saved there.
"""

from __future__ import annotations

import contextlib
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db.models import F
from django.utils import timezone
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from jobs.models import Job, JobStatus
from tests.factories import job_row

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SHOTS = Path(__file__).resolve().parents[2] / "var" / "browser"
PASSWORD = "browser-test-password"


@pytest.fixture(scope="module")
def browser():
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and chromedriver, "apt-get install chromium chromium-driver (.ci/run does)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,1100"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def collected_static(django_db_blocker):
    """gunicorn with DEBUG off serves what collectstatic gathered (as the Docker image does)."""
    call_command("collectstatic", "--noinput", verbosity=0)


@pytest.fixture
def server(start_web, collected_static, browser):
    User.objects.create_superuser("operator", "operator@localhost", PASSWORD)
    web = start_web(workers=1)
    browser.get(f"{web.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("operator")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 10).until(lambda d: "/admin/login/" not in d.current_url)
    browser.get_log("browser")  # only the errors of the pages under test count
    yield web
    browser.delete_all_cookies()


@contextlib.contextmanager
def page(browser, name: str):
    """Open a page's checks; on failure keep a screenshot. Either way, the console must have no error."""
    try:
        yield
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
    except BaseException:
        SHOTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SHOTS / f"{name}-failed.png"))
        raise


def some_history(project) -> Job:
    """Jobs finished over the last day (more in the last hour), some failed, a few running and waiting; returns a
    failed one."""
    now = timezone.now()
    jobs = []
    for i in range(400):
        ago = timedelta(minutes=(i * 7) % 1440 if i % 2 else (i * 3) % 60, seconds=i % 60)
        status = JobStatus.FAILED if i % 9 == 0 else JobStatus.SUCCESS
        jobs.append(
            Job(
                project=project,
                job_type=("ECHO", "LLM_API", "DOC_TRANSFORM")[i % 3],
                function_path="jobs.functions.echo",
                queue="high_priority",
                priority=9,
                status=status,
                error="ValueError: the provider said no" if status == JobStatus.FAILED else "",
                started_at=now - ago - timedelta(seconds=1 + i % 5),
                finished_at=now - ago,
                attempts=1,
            )
        )
    Job.objects.bulk_create(jobs)
    for job_type, wait in (("ECHO", 0.2), ("LLM_API", 1.5), ("DOC_TRANSFORM", 6)):  # created_at is auto_now_add
        Job.objects.filter(project=project, job_type=job_type).update(
            created_at=F("started_at") - timedelta(seconds=wait)
        )
    for _ in range(4):
        job_row(project, status=JobStatus.PROCESSING, started_at=now)
    for _ in range(8):  # waiting for admission
        job_row(project)
    return job_row(
        project,
        status=JobStatus.FAILED,
        params={"query": "hello", "nested": {"a": [1, 2, 3]}},
        error="ValueError: the provider said no",
        started_at=now,
        finished_at=now,
    )


def test_the_operators_pages_in_a_browser(browser, server, project):
    """One server for the pages (a gunicorn start and a login cost more than the checks)."""
    failed = some_history(project)

    with page(browser, "dashboard"):
        browser.get(f"{server.url}/admin/dashboard/")
        points = WebDriverWait(browser, 15).until(
            lambda d: d.execute_script(
                """
                if (!window.Chart) return null;
                const charts = Object.values(Chart.instances);
                if (charts.length < 3) return null;
                const points = {};
                charts.forEach((chart) => {
                    points[chart.canvas.id] = chart.data.datasets.reduce(
                        (sum, dataset) => sum + dataset.data.filter((value) => value > 0).length, 0);
                });
                return points;
                """
            )
        )
        assert points["chart-hour"] > 0 and points["chart-day"] > 0, points
        assert "chart-queues" in points
        rows = browser.find_elements(By.CSS_SELECTOR, "#table-timings tbody tr")
        assert {row.find_element(By.TAG_NAME, "td").text for row in rows} == {"ECHO", "LLM_API", "DOC_TRANSFORM"}
        assert project.name in browser.find_element(By.ID, "table-projects").text
        assert browser.find_element(By.ID, "card-now").text.startswith("4 running · 8 waiting")
        SHOTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SHOTS / "dashboard.png"))

    with page(browser, "job"):
        browser.get(f"{server.url}/admin/jobs/job/{failed.id}/change/")
        assert browser.find_element(By.ID, "job-retry").is_displayed()
        params = browser.find_element(By.CSS_SELECTOR, ".field-params_json details")
        assert params.get_attribute("open") is not None and '"nested"' in params.text
        browser.find_element(By.CSS_SELECTOR, ".field-params_json summary").click()
        assert params.get_attribute("open") is None  # folded

    with page(browser, "jobs"):
        browser.get(f"{server.url}/admin/jobs/job/?q={str(failed.id)[:8]}")
        ids = browser.find_elements(By.CSS_SELECTOR, "#result_list .job-id")
        assert [element.get_attribute("title") for element in ids] == [str(failed.id)]

    with page(browser, "api-docs"):
        browser.get(f"{server.url}/api/docs/")
        WebDriverWait(browser, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) > 20)
        paths = {element.text for element in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
        assert {"/api/v1/jobs/echo/", "/api/v1/llm/call", "/api/v1/documents/"} <= {
            p.replace("\u200b", "") for p in paths
        }
        tags = {element.text for element in browser.find_elements(By.CSS_SELECTOR, ".opblock-tag")}
        assert {"jobs", "llm", "doctransform"} <= {tag.split("\n")[0] for tag in tags}
        resources = browser.execute_script("return performance.getEntriesByType('resource').map((r) => r.name)")
        assert resources and all(url.startswith(server.url) for url in resources), resources
