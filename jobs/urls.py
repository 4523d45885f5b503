from rest_framework.routers import SimpleRouter

from .views import JobViewSet

router = SimpleRouter(use_regex_path=False)
router.register("jobs", JobViewSet, basename="job")
urlpatterns = router.urls
