"""The chat UI in a real headless Chromium (Debian's package): ask, see the tool call and the answer, rate it."""
import shutil, time
import pytest
from conftest import AppProcess
from test_app import log_records

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed: `make test` installs it when run as root; otherwise `sudo apt-get install chromium`")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                                                              "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(browser, trained_project):
    app = AppProcess(trained_project).wait()
    pg = browser.new_page()
    pg.goto(app.url)
    yield pg
    pg.close()
    app.stop()


def test_chat_shows_tool_call_and_answer_and_logs_the_rating(page, trained_project):
    page.get_by_placeholder("Ask something…").fill("What is 37 times 12?")
    page.get_by_role("button", name="Send").click()
    page.get_by_text("calculator(", exact=False).first.wait_for(timeout=120_000)
    page.get_by_text("444", exact=False).last.wait_for(timeout=120_000)
    page.get_by_text("tokens/s", exact=False).first.wait_for(timeout=60_000)
    turn = next(r for r in reversed(log_records(trained_project)) if r["type"] == "turn")
    assert "37 times 12" in turn["messages"][0]["content"]
    page.get_by_role("button", name="Like").last.click()
    page.get_by_text("Logged 👍", exact=False).wait_for(timeout=30_000)
    deadline = time.time() + 10
    while time.time() < deadline:
        if any(r["type"] == "feedback" and r["turn_id"] == turn["id"] and r["rating"] == "up" for r in log_records(trained_project)): return
        time.sleep(0.2)
    raise AssertionError("the 👍 was not logged against the turn")


def test_a_disliked_reply_can_be_corrected(page, trained_project):
    "After the first test: 👎 on the answer targets that turn for ✏️, and the correction is logged against it."
    turn = next(r for r in reversed(log_records(trained_project)) if r["type"] == "turn")
    page.get_by_role("button", name="Dislike").last.click()
    page.get_by_text("Logged 👎", exact=False).wait_for(timeout=30_000)
    page.get_by_text("✏️ Correct a reply: what should", exact=False).click()
    page.get_by_text(f"Correcting turn {turn['id'][:8]}", exact=False).wait_for(timeout=30_000)
    page.get_by_label("the right answer").fill("37 times 12 is 444.")
    page.get_by_role("button", name="Record correction").click()
    page.get_by_text("Correction recorded", exact=False).wait_for(timeout=30_000)
    fixes = [r for r in log_records(trained_project) if r["type"] == "correction" and r["turn_id"] == turn["id"]]
    assert [f["answer"] for f in fixes] == ["37 times 12 is 444."] and "tool_calls" not in fixes[0]


def test_an_answer_edited_in_the_chat_is_recorded_as_its_correction(page, trained_project):
    "After the first tests: ✏️ on the agent's answer, a new text, submitted: a correction with that answer is logged against the turn; the chat goes on showing what was served."
    turn = next(r for r in reversed(log_records(trained_project)) if r["type"] == "turn")
    page.get_by_role("button", name="Edit").last.click()
    # the agent's turn is one group of bubbles (the tool step, then the answer): each gets its own edit box
    page.locator("textarea.edit-textarea").last.fill("37 times 12 is 444, as the calculator says.")
    page.get_by_role("button", name="Submit").last.click()
    page.get_by_text("trains on your answer", exact=False).wait_for(timeout=30_000)
    fixes = [r for r in log_records(trained_project) if r["type"] == "correction" and r["turn_id"] == turn["id"]]
    assert fixes[-1]["answer"] == "37 times 12 is 444, as the calculator says." and "tool_calls" not in fixes[-1]


def test_logged_in_users_are_recorded_and_only_a_reviewer_sees_and_works_the_queue(browser, trained_project):
    "Two logins (`[app] auth`), one of them a reviewer (`[app] reviewers`): a turn records its user; the reviewer, and only they, sees the queue and rejects a stranger's 👍 of an echoed answer in it."
    from agent_loop.interactions import InteractionLog, read_log
    log = InteractionLog(trained_project / "data/interactions")
    echo = log.log_turn([{"role": "user", "content": "What is 6 times 7? It is 43."}, {"role": "assistant", "content": "It is 43."}], {}, "s-stranger")
    stranger = log.log_feedback(echo, "up")
    app = AppProcess(trained_project, env={"AGENT_LOOP_APP_AUTH": "ana:pw-ana rui:pw-rui", "AGENT_LOOP_APP_REVIEWERS": "rui"}).wait()
    try:
        def login(user, password):
            page = browser.new_context().new_page()
            page.goto(app.url)
            page.get_by_label("username").fill(user); page.get_by_label("password").fill(password)
            page.get_by_role("button", name="Login").click()
            page.get_by_placeholder("Ask something…").wait_for(timeout=60_000)
            return page
        ana = login("ana", "pw-ana")
        ana.get_by_placeholder("Ask something…").fill("What is 37 times 12?")
        ana.get_by_role("button", name="Send").click()
        ana.get_by_text("tokens/s", exact=False).first.wait_for(timeout=120_000)
        assert ana.get_by_text("Review queue", exact=False).count() == 0  # not a reviewer: the queue is not there
        turn = next(r for r in reversed(read_log(log.folder)[0]) if r["type"] == "turn")
        assert turn.get("user") == "ana", turn.get("user")
        rui = login("rui", "pw-rui")
        rui.get_by_text("Review queue", exact=False).click()
        rui.locator(f"text={stranger} >> visible=true").first.wait_for(timeout=30_000)  # the stranger's 👍 waits in the table
        rui.get_by_label("id of the rating or correction").fill(stranger)
        rui.get_by_label("reject").check()
        rui.get_by_label("why (optional)").fill("the user told it the answer; 6 times 7 is 42")
        rui.get_by_role("button", name="Decide").click()
        rui.get_by_text("as rui", exact=False).wait_for(timeout=30_000)  # "Rejected <id> as rui."
        reviews = [r for r in read_log(log.folder)[0] if r["type"] == "review" and r["proposal_id"] == stranger]
        assert [(r["decision"], r["reviewer"]) for r in reviews] == [("reject", "rui")]
    finally:
        app.stop()
