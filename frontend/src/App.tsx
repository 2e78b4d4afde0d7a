import { createBrowserRouter, RouterProvider, type RouteObject } from "react-router";
import { Layout } from "./components/Layout";
import { CircuitPage } from "./pages/CircuitPage";
import { CircuitsPage } from "./pages/CircuitsPage";
import { FeaturePage } from "./pages/FeaturePage";
import { HomePage } from "./pages/HomePage";
import { JobPage } from "./pages/JobPage";
import { JobsPage } from "./pages/JobsPage";
import { NotFound } from "./pages/NotFound";
import { SaePage } from "./pages/SaePage";
import { TryPage } from "./pages/TryPage";

export const routes: RouteObject[] = [
  {
    path: "/",
    element: <Layout />,
    children: [
      { index: true, element: <HomePage /> },
      { path: "saes/:saeId", element: <SaePage /> },
      { path: "saes/:saeId/features/:index", element: <FeaturePage /> },
      { path: "saes/:saeId/try", element: <TryPage /> },
      { path: "jobs", element: <JobsPage /> },
      { path: "jobs/:jobId", element: <JobPage /> },
      { path: "circuits", element: <CircuitsPage /> },
      { path: "circuits/:graphId", element: <CircuitPage /> },
      { path: "*", element: <NotFound /> },
    ],
  },
];

const router = createBrowserRouter(routes);

export function App() {
  return <RouterProvider router={router} />;
}
